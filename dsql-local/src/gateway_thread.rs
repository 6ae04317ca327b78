//! The gateway's own thread and single-threaded runtime.
//!
//! Why not the caller's runtime: a test that blocks its runtime (a sync driver, `psql` run with
//! `std::process::Command`, a `#[tokio::test]` on one thread) would stall the gateway with it;
//! a `LocalDsql` kept in a `static` would die with the first test's runtime; and on a
//! multi-threaded runtime every relayed message wakes another thread, which costs more than the
//! relaying itself. One thread with its own event loop serves every connection.

use crate::gateway::{self, Shared};
use std::io;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// The running gateway. Dropping it stops the thread: every connection closes.
#[derive(Debug)]
pub(crate) struct GatewayThread {
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<oneshot::Receiver<()>>,
}

impl GatewayThread {
    /// Starts accepting on `listener` (already bound) in a new thread. The caller's tracing
    /// subscriber follows the gateway into its thread, so its logs go where the caller's go.
    pub(crate) fn start(
        listener: std::net::TcpListener,
        tls: TlsAcceptor,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let (stop, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name("dsql-local-gateway".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "dsql-local cannot accept connections");
                            return;
                        }
                    };
                    tokio::select! {
                        () = gateway::serve(listener, tls, shared) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task: their sockets close here.
                drop(runtime);
                let _ = stopped_tx.send(());
            })?;
        Ok(GatewayThread {
            stop: Some(stop),
            stopped: Some(stopped),
        })
    }

    /// Stops accepting and closes every connection; returns once they are closed.
    pub(crate) async fn stop(&mut self) {
        self.signal();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }

    fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for GatewayThread {
    fn drop(&mut self) {
        // Not joined: Drop may run inside an async task, which must not block. The thread
        // ends within one turn of its event loop.
        self.signal();
    }
}
