//! Getting real data: Broden and published checkpoints, by name.
//!
//! - [`Registry`]: what can be fetched. Each [`Item`] names its file, its
//!   size and SHA-256 where they are known, the mirrors that serve it, how
//!   it unpacks and what kind of thing it is (which decides the checks
//!   after). The built-in registry ships in the binary; a JSON file of the
//!   same form adds or overrides items.
//! - [`Fetcher::download`]: an HTTP(S) download tried mirror by mirror,
//!   resumed with a range request after a cut connection (or started over
//!   where the server ignores ranges), retried with back-off, checked
//!   against the item's size and digest before it takes its name.
//! - [`Expect`]: the checks of a file: a recorded SHA-256, the prefix of
//!   one that torchvision puts in its file names, or the digest of the
//!   first verified download, written beside it ([`record_digest`]) and
//!   checked on every later use.
//! - [`unpack_zip`]: a zip unpacked into a staging folder beside the
//!   destination, checked by the caller, then renamed into place: a
//!   failure (a bad zip, a full disk, a failed check) leaves nothing at
//!   the destination.
//! - [`torch_checkpoints_dir`]: where PyTorch keeps downloaded
//!   checkpoints, which published weights share.
//!
//! Nothing here knows Broden's or a checkpoint's format: the caller
//! (`app`) checks what it fetched.

mod digest;
mod error;
mod http;
mod registry;
mod torch;
mod unzip;

pub use digest::{Expect, digest_record_path, read_recorded_digest, record_digest, sha256_file};
pub use error::FetchError;
pub use http::{Fetcher, Progress, Quiet, Retry, Unit};
pub use registry::{Item, ItemKind, Registry, Unpack, check_mirror, mirror_url};
pub use torch::torch_checkpoints_dir;
pub use unzip::unpack_zip;
