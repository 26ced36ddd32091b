//! Flowcase Gateway configuration: the only place that knows the TOML file format and the
//! `FLOWCASE_<SECTION>__<KEY>` environment overrides. Everything else receives a validated
//! [`Config`].
//!
//! Every key is documented in `config/flowcase.example.toml`; a test keeps that file and the
//! defaults here in step.

mod duration;
mod load;
mod model;
mod secret;
mod size;

pub use duration::Duration;
pub use load::{ConfigError, ENV_PREFIX, Origin, load};
pub use model::*;
pub use secret::Secret;
pub use size::ByteSize;
