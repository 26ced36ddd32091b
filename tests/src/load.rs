//! Steady requests across a handover of the gateway's listeners (an upgrade, a reload): a few
//! loops of `GET /` on `localhost`, each request on a new connection, so that requests land on
//! whichever process holds the listeners at that moment. What went wrong is kept, not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{Gateway, GatewayDir};

pub struct Load {
    ok: Arc<AtomicUsize>,
    running: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    /// Starts `loops` loops (at most 10,000 requests each) against the gateway of `dir`.
    pub fn start(gw: &Gateway, dir: &GatewayDir, loops: usize) -> Load {
        let client = gw
            .client_builder(&dir.data_dir(), &["localhost"])
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let url = gw.url("localhost", "/");
        let ok = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicBool::new(true));
        let tasks = (0..loops)
            .map(|_| {
                let (client, url, ok, running) =
                    (client.clone(), url.clone(), ok.clone(), running.clone());
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    for _ in 0..10_000 {
                        if !running.load(Ordering::Relaxed) {
                            break;
                        }
                        match client.get(&url).send().await {
                            Ok(resp) if resp.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(resp) => errors.push(format!("status {}", resp.status())),
                            Err(e) => errors.push(format!("{e:?}")),
                        }
                    }
                    errors
                })
            })
            .collect();
        Load { ok, running, tasks }
    }

    /// How many requests were answered 200 so far.
    pub fn served(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the loops; returns how many requests were answered 200 in all, and what went
    /// wrong (another status, or an error), one line each.
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.running.store(false, Ordering::Relaxed);
        let mut errors = Vec::new();
        for task in self.tasks {
            errors.extend(task.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), errors)
    }
}
