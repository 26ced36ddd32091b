//! Images of container droplets: pulling them for administrators, with progress, and the
//! registry credentials they are pulled with.
//!
//! Owns [`Orchestrator::pull_image`] (a droplet's image pulled on the engine, progress sent on a
//! channel as it comes, the outcome audited) and the droplets' registry credentials, sealed at
//! rest like external host credentials (AES-256-GCM under the key file, purpose naming the
//! droplet, in `droplet_registry_credentials`) and opened only to hand them to the engine.
//!
//! A pull runs in its own task: the caller reads [`PullEvent`]s from the channel (a command line
//! prints them, an SSE endpoint forwards them) and a caller that goes away does not cancel the
//! pull. Launches never pull: a missing image is `image_missing` until an administrator pulls.

use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use super::engine::{EngineError, PullProgress, RegistryAuth, with_default_tag};
use super::lifecycle::engine_err;
use super::{Actor, Orchestrator};
use crate::error::{AdminError, Result};
use crate::secrets::{Keyring, seal};
use crate::store::{Droplet, NewAuditEntry, TargetKind};

/// Purpose prefix of sealed registry credentials (AEAD associated data, with the droplet id
/// appended so a sealed value copied onto another droplet does not open there).
pub const REGISTRY_CREDENTIALS_PURPOSE: &str = "registry-credentials";

/// Progress events buffered per pull before the engine's stream waits for the reader.
const PULL_CHANNEL: usize = 64;

/// The account a droplet's image is pulled with. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredentials {
    /// Account on the registry.
    pub username: String,
    /// Its password (or access token).
    pub password: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn purpose(droplet_id: i64) -> String {
    format!("{REGISTRY_CREDENTIALS_PURPOSE}:{droplet_id}")
}

/// Seals `credentials` for the droplet `droplet_id`.
pub fn seal_registry_credentials(
    keyring: &Keyring,
    droplet_id: i64,
    credentials: &RegistryCredentials,
) -> Result<Vec<u8>> {
    seal::seal(keyring, &purpose(droplet_id), credentials, i64::MAX)
        .map(String::into_bytes)
        .ok_or_else(|| AdminError::InvalidData("cannot seal registry credentials".into()))
}

/// Opens credentials sealed for `droplet`, saying what is wrong when they do not open.
pub fn open_registry_credentials(
    keyring: &Keyring,
    droplet: &Droplet,
    sealed: &[u8],
) -> Result<RegistryCredentials> {
    super::lifecycle::open_sealed(
        keyring,
        &purpose(droplet.id),
        std::str::from_utf8(sealed).unwrap_or_default(),
        0,
        &format!("the registry credentials of droplet {:?}", droplet.name),
    )
}

/// The registry server an image comes from, as the engine keys credentials: the droplet's
/// `registry` when set, else the image reference's first component when it names a host
/// (has a dot or a port, or is `localhost`), else Docker Hub.
pub fn registry_server(droplet: &Droplet, image: &str) -> String {
    if let Some(registry) = droplet.registry.as_deref().filter(|r| !r.is_empty()) {
        return registry.to_owned();
    }
    match image.split_once('/') {
        Some((host, _)) if host.contains(['.', ':']) || host == "localhost" => host.to_owned(),
        _ => "https://index.docker.io/v1/".to_owned(),
    }
}

/// What a pull reports, in order: progress, then exactly one of `Done` or `Failed`.
#[derive(Debug)]
pub enum PullEvent {
    /// The engine's progress (per layer, or for the whole image).
    Progress(PullProgress),
    /// The image is present now.
    Done {
        /// The reference pulled (with its tag).
        image: String,
    },
    /// The pull failed: [`AdminError::ImageNotInRegistry`] (code `image_missing`), [`AdminError::RegistryRefused`],
    /// [`AdminError::RegistryUnreachable`] or [`AdminError::Engine`].
    Failed(AdminError),
}

/// Turns a pull's progress into log lines for people: one line per change of a layer's state
/// (a download reports many times per layer; each state is said once, with the layer's size
/// when the engine gives it). Shared by `flowcase droplet pull` and the API's event stream, so
/// both logs read the same.
#[derive(Debug, Default)]
pub struct PullLog {
    last: Option<(Option<String>, String)>,
}

impl PullLog {
    /// The line `progress` adds to the log, if it changes a layer's state.
    pub fn line(&mut self, progress: &PullProgress) -> Option<String> {
        let key = (progress.layer.clone(), progress.status.clone());
        if self.last.as_ref() == Some(&key) {
            return None;
        }
        self.last = Some(key);
        let bytes = match progress.total {
            Some(total) if total > 0 => format!(" ({total} bytes)"),
            _ => String::new(),
        };
        Some(match &progress.layer {
            Some(layer) => format!("{layer}: {}{bytes}", progress.status),
            None => progress.status.clone(),
        })
    }
}

impl Orchestrator {
    /// Stores (or, with `None`, removes) the registry credentials of a container droplet,
    /// sealed, and audits the change (never the secret).
    pub async fn set_registry_credentials(
        &self,
        actor: &Actor,
        droplet: &Droplet,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<()> {
        if droplet.target != TargetKind::Container {
            return Err(AdminError::InvalidInput {
                field: "registry_username",
                reason: "only container droplets are pulled from a registry".into(),
            });
        }
        let sealed = credentials
            .map(|c| seal_registry_credentials(&self.keyring, droplet.id, c))
            .transpose()?;
        self.store
            .set_droplet_registry_credentials(droplet.id, sealed.as_deref(), self.now())
            .await?;
        self.audit_droplet(
            actor,
            droplet,
            "droplet.registry_credentials",
            json!({ "set": credentials.is_some(),
                    "username": credentials.map(|c| c.username.as_str()) }),
        )
        .await
    }

    /// Pulls the image of container droplet `droplet_id` with its stored registry credentials.
    /// Checks (droplet, image, credentials) fail at once; the pull itself runs in a task that
    /// sends [`PullEvent`]s on the returned channel and audits the outcome as `droplet.pull`.
    pub async fn pull_image(
        self: &Arc<Self>,
        actor: Actor,
        droplet_id: i64,
    ) -> Result<mpsc::Receiver<PullEvent>> {
        let droplet = self
            .store
            .get_droplet(droplet_id)
            .await?
            .ok_or_else(|| AdminError::NotFound("droplet"))?;
        let image = match (&droplet.target, droplet.image.as_deref()) {
            (TargetKind::Container, Some(image)) if !image.is_empty() => with_default_tag(image),
            _ => {
                return Err(AdminError::InvalidInput {
                    field: "image",
                    reason: format!("droplet {:?} has no image to pull", droplet.name),
                });
            }
        };
        let auth = match self.store.droplet_registry_credentials(droplet.id).await? {
            Some(sealed) => {
                let credentials = open_registry_credentials(&self.keyring, &droplet, &sealed)?;
                Some(RegistryAuth {
                    username: credentials.username,
                    password: credentials.password,
                    server: registry_server(&droplet, &image),
                })
            }
            None => None,
        };
        tracing::info!(droplet = droplet.id, %image, with_credentials = auth.is_some(), "pulling image");
        let (tx, rx) = mpsc::channel(PULL_CHANNEL);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut progress = this.engine.pull(&image, auth);
            let mut failure = None;
            let mut reader_gone = false;
            while let Some(item) = progress.next().await {
                match item {
                    Ok(p) if !reader_gone => {
                        reader_gone = tx.send(PullEvent::Progress(p)).await.is_err();
                    }
                    Ok(_) => {}
                    Err(EngineError::ImageMissing(image)) => {
                        failure = Some(AdminError::ImageNotInRegistry(image));
                        break;
                    }
                    Err(e) => {
                        failure = Some(engine_err(e));
                        break;
                    }
                }
            }
            let details = json!({
                "image": image,
                "outcome": failure.as_ref().map_or_else(|| "pulled".to_owned(), ToString::to_string),
            });
            if let Err(e) = this
                .audit_droplet(&actor, &droplet, "droplet.pull", details)
                .await
            {
                tracing::warn!(error = %e, "cannot audit an image pull");
            }
            match failure {
                None => {
                    tracing::info!(%image, "image pulled");
                    let _ = tx.send(PullEvent::Done { image }).await;
                }
                Some(e) => {
                    tracing::warn!(%image, error = %e, "image pull failed");
                    let _ = tx.send(PullEvent::Failed(e)).await;
                }
            }
        });
        Ok(rx)
    }

    async fn audit_droplet(
        &self,
        actor: &Actor,
        droplet: &Droplet,
        action: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        let entry = NewAuditEntry {
            actor_user_id: actor.user_id,
            actor_name: actor.name.clone(),
            action: action.to_owned(),
            target_kind: Some("droplet".into()),
            target_id: Some(droplet.id.to_string()),
            client_addr: None,
            details,
        };
        self.store.append_audit(&entry, self.now()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::secrets::Key;
    use crate::store::{DropletType, NewDroplet};

    fn droplet() -> Droplet {
        let new = NewDroplet::new(1, "Web", DropletType::Http, TargetKind::Container);
        super::super::catalogue::preview(&new)
    }

    #[test]
    fn the_registry_server_comes_from_the_droplet_or_the_image() {
        let mut d = droplet();
        d.registry = None;
        assert_eq!(
            registry_server(&d, "127.0.0.1:5000/flowcase/httpd:v1"),
            "127.0.0.1:5000"
        );
        assert_eq!(
            registry_server(&d, "registry.example/a/b:1"),
            "registry.example"
        );
        assert_eq!(registry_server(&d, "localhost/a:1"), "localhost");
        assert_eq!(
            registry_server(&d, "library/debian:12"),
            "https://index.docker.io/v1/"
        );
        d.registry = Some("mirror.example:443".into());
        assert_eq!(
            registry_server(&d, "library/debian:12"),
            "mirror.example:443"
        );
    }

    #[test]
    fn the_pull_log_says_each_layer_state_once() {
        let p = |layer: Option<&str>, status: &str, total: Option<i64>| PullProgress {
            layer: layer.map(str::to_owned),
            status: status.into(),
            current: Some(1),
            total,
        };
        let mut log = PullLog::default();
        assert_eq!(
            log.line(&p(None, "Pulling from a/b", None)).as_deref(),
            Some("Pulling from a/b")
        );
        assert_eq!(
            log.line(&p(Some("ab12"), "Downloading", Some(300)))
                .as_deref(),
            Some("ab12: Downloading (300 bytes)")
        );
        assert_eq!(log.line(&p(Some("ab12"), "Downloading", Some(300))), None);
        assert_eq!(
            log.line(&p(Some("ab12"), "Pull complete", None)).as_deref(),
            Some("ab12: Pull complete")
        );
    }

    #[test]
    fn bare_repositories_get_the_latest_tag() {
        assert_eq!(with_default_tag("debian"), "debian:latest");
        assert_eq!(
            with_default_tag("127.0.0.1:5000/a/b"),
            "127.0.0.1:5000/a/b:latest"
        );
        assert_eq!(
            with_default_tag("127.0.0.1:5000/a/b:v1"),
            "127.0.0.1:5000/a/b:v1"
        );
        assert_eq!(with_default_tag("a/b@sha256:00"), "a/b@sha256:00");
    }

    #[test]
    fn sealed_credentials_open_only_for_their_droplet_and_hide_the_password() {
        let keys = Keyring::from_keys(vec![Key {
            id: "k1".into(),
            bytes: [3; 32],
        }])
        .unwrap();
        let mut d = droplet();
        d.id = 7;
        let creds = RegistryCredentials {
            username: "puller".into(),
            password: "s3cret-pw".into(),
        };
        let sealed = seal_registry_credentials(&keys, 7, &creds).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("s3cret-pw"));
        assert_eq!(
            open_registry_credentials(&keys, &d, &sealed).unwrap(),
            creds
        );
        d.id = 8;
        assert!(open_registry_credentials(&keys, &d, &sealed).is_err());
        assert!(!format!("{creds:?}").contains("s3cret-pw"));
    }
}
