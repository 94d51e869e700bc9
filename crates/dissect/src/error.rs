//! Errors of a dissection run.

#[derive(Debug, thiserror::Error)]
pub enum DissectError {
    #[error(transparent)]
    Dataset(#[from] broden::BrodenError),
    #[error(transparent)]
    Model(#[from] models::ModelError),
    #[error(transparent)]
    Kernel(#[from] kernels::KernelError),
    #[error("invalid option: {0}")]
    Option(String),
    #[error("layer `{layer}`: {message}")]
    Layer { layer: String, message: String },
    #[error("the dissection was cancelled")]
    Cancelled,
}
