//! The dissection engine: streaming passes, scores and result types.
