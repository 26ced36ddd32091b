//! Launches as users ask for them: the options a request may set (the desktop resolution), and a
//! launch that answers once the instance is admitted while its container is made in the
//! background (the API's `202 Accepted`), next to [`Orchestrator::launch`], which waits.
//!
//! The split is [`Orchestrator::prepare_launch`] (checks, admission: refusals come back at
//! once) and [`Orchestrator::complete_launch`] (network, volume, container, readiness: a failure
//! ends in the row's `error` status with its reason, where the dashboard shows it).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::engine::ContainerSpec;
use super::{Actor, Orchestrator, Upstream};
use crate::error::{AdminError, Result};
use crate::store::{Droplet, Instance, User};

/// The environment variable carrying the requested desktop size, `WIDTHxHEIGHT`, to the
/// container. Images that can size their desktop (a VNC server's geometry, a web desktop's
/// canvas) read it; others ignore it. It replaces a droplet variable of the same name.
pub const RESOLUTION_ENV: &str = "FLOWCASE_RESOLUTION";

/// Smallest width and height accepted, in pixels.
pub const MIN_RESOLUTION: (u32, u32) = (320, 200);
/// Largest width and height accepted (8K), in pixels.
pub const MAX_RESOLUTION: (u32, u32) = (7680, 4320);

/// A desktop size within [`MIN_RESOLUTION`] and [`MAX_RESOLUTION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

impl Resolution {
    /// Reads `WIDTHxHEIGHT` (decimal digits only, `x` or `X`), refusing anything else or out
    /// of bounds as an `InvalidInput` on `resolution`.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: String| AdminError::InvalidInput {
            field: "resolution",
            reason,
        };
        let number = |part: &str| {
            (!part.is_empty() && part.len() <= 5 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u32>().ok())
                .flatten()
        };
        let parsed = text
            .split_once(['x', 'X'])
            .and_then(|(w, h)| Some((number(w)?, number(h)?)));
        let Some((width, height)) = parsed else {
            return Err(invalid("expected WIDTHxHEIGHT, e.g. 1920x1080".into()));
        };
        let (min_w, min_h) = MIN_RESOLUTION;
        let (max_w, max_h) = MAX_RESOLUTION;
        if !(min_w..=max_w).contains(&width) || !(min_h..=max_h).contains(&height) {
            return Err(invalid(format!(
                "must be between {min_w}x{min_h} and {max_w}x{max_h}"
            )));
        }
        Ok(Self { width, height })
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// What a launch request may tailor. A warm pool container, made before anyone asked, keeps
/// what it was made with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaunchOptions {
    /// The desktop size, given to the container as [`RESOLUTION_ENV`].
    pub resolution: Option<Resolution>,
}

impl LaunchOptions {
    pub(super) fn apply(&self, spec: &mut ContainerSpec) {
        if let Some(resolution) = self.resolution {
            spec.env
                .insert(RESOLUTION_ENV.to_owned(), resolution.to_string());
        }
    }
}

/// A launch admitted (its row is `creating`) whose container is still to be made.
pub(super) struct PendingLaunch {
    pub(super) actor: Actor,
    pub(super) instance: Instance,
    pub(super) droplet: Droplet,
    pub(super) spec: ContainerSpec,
    /// The desktop password, until it is sealed onto the row.
    pub(super) password: Option<String>,
}

/// Where [`Orchestrator::prepare_launch`] left a launch.
pub(super) enum Prepared {
    /// Finished already (external host, warm pool container).
    Done(Box<Instance>, Upstream),
    /// Admitted; [`Orchestrator::complete_launch`] makes the container.
    Admitted(Box<PendingLaunch>),
}

fn meter<T>(started: Instant, result: &Result<T>) {
    match result {
        Ok(_) => crate::metrics::launched(started.elapsed().as_secs_f64()),
        Err(e) => crate::metrics::launch_failed(crate::web::error::classify(e).1),
    }
}

impl Orchestrator {
    /// [`Self::launch`] with the request's options.
    pub async fn launch_with(
        &self,
        user: &User,
        droplet: &Droplet,
        options: &LaunchOptions,
    ) -> Result<(Instance, Upstream)> {
        let started = Instant::now();
        let result = match self.prepare_launch(user, droplet, options).await {
            Ok(Prepared::Done(instance, upstream)) => Ok((*instance, upstream)),
            Ok(Prepared::Admitted(pending)) => self.complete_launch(pending).await,
            Err(e) => Err(e),
        };
        meter(started, &result);
        result
    }

    /// Admits a launch and returns its row (`creating`, or already `running` for an external
    /// host or a warm pool container) without waiting for the container, which a background
    /// task makes and starts: it ends `running`, or `error` with the reason. Refusals (quota,
    /// capacity, missing image, inactive droplet) come back here, before any row exists. The
    /// task is bounded by the readiness timeout like any launch.
    pub async fn launch_in_background(
        self: &Arc<Self>,
        user: &User,
        droplet: &Droplet,
        options: &LaunchOptions,
    ) -> Result<Instance> {
        let started = Instant::now();
        match self.prepare_launch(user, droplet, options).await {
            Ok(Prepared::Done(instance, _)) => {
                meter(started, &Ok(()));
                Ok(*instance)
            }
            Ok(Prepared::Admitted(pending)) => {
                let instance = pending.instance.clone();
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    let slug = pending.instance.slug.clone();
                    let result = this.complete_launch(pending).await;
                    meter(started, &result);
                    if let Err(e) = result {
                        tracing::info!(instance = %slug, error = %e, "launch failed");
                    }
                });
                Ok(instance)
            }
            Err(e) => {
                let refused: Result<Instance> = Err(e);
                meter(started, &refused);
                refused
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn resolutions_are_bounded_and_strictly_formed() {
        let ok = Resolution::parse("1920x1080").unwrap();
        assert_eq!((ok.width, ok.height), (1920, 1080));
        assert_eq!(ok.to_string(), "1920x1080");
        assert_eq!(Resolution::parse("320X200").unwrap().to_string(), "320x200");
        assert_eq!(
            Resolution::parse("7680x4320").unwrap().to_string(),
            "7680x4320"
        );
        for bad in [
            "",
            "1920",
            "1920x",
            "x1080",
            "1920x1080x1",
            "+1920x1080",
            "1920 x1080",
            "-1x5",
            "1e3x900",
            "319x200",
            "320x199",
            "7681x4320",
            "99999999999x1",
            "１９２０x1080",
        ] {
            match Resolution::parse(bad) {
                Err(AdminError::InvalidInput { field, .. }) => assert_eq!(field, "resolution"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_resolution_reaches_the_container_and_wins_over_the_droplet() {
        let mut spec = ContainerSpec {
            name: "flowcase-x".into(),
            image: "img".into(),
            env: [(RESOLUTION_ENV.to_owned(), "640x480".to_owned())].into(),
            labels: Default::default(),
            nano_cpus: 1,
            memory_bytes: 1,
            pids_limit: 1,
            cap_add: vec![],
            read_only_root: false,
            tmpfs: vec![],
            network: "n".into(),
            ports: vec![],
            exposure: super::super::engine::Exposure::LoopbackEphemeral,
            mounts: vec![],
        };
        LaunchOptions::default().apply(&mut spec);
        assert_eq!(spec.env[RESOLUTION_ENV], "640x480", "no request, no change");
        LaunchOptions {
            resolution: Some(Resolution::parse("1280x800").unwrap()),
        }
        .apply(&mut spec);
        assert_eq!(spec.env[RESOLUTION_ENV], "1280x800");
    }
}
