//! A TCP proxy of the tests' own, between pulse and a server, that can fail on cue: refuse
//! connections, or swallow them (a blackhole), and then pass them again. Optionally it
//! terminates TLS in front of a plaintext upstream (see [`crate::tls`]).
//!
//! Why: the servers the tests start cannot be made unreachable without losing what they
//! hold (moto keeps its objects in memory, so restarting it is not an outage but a wiped
//! store). With the proxy in the path the server goes on untouched while pulse cannot reach
//! it. An outage cuts the connections already relayed too, so that a client's pooled
//! connections do not carry on through it: refused ones are closed, blackholed ones are
//! kept open and silent until the outage ends.

use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openssl::ssl::{Ssl, SslAcceptor};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_openssl::SslStream;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relays them.
    None,
    /// Closes each at once: the server is down.
    Refuse,
    /// Accepts each and never answers: packets dropped on the way.
    Blackhole,
}

/// TLS handshakes the proxy has completed and refused.
#[derive(Debug, Default)]
pub struct Handshakes {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// A listener that relays each connection to `upstream`. It runs on a thread and runtime of
/// its own (so it serves whatever the test's runtime does); dropping it stops accepting and
/// cuts every relayed connection.
#[derive(Debug)]
pub struct Proxy {
    address: String,
    handshakes: Arc<Handshakes>,
    fault: watch::Sender<Fault>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Proxy {
    /// Relays plain TCP from `listener` to `upstream`.
    pub fn start(listener: TcpListener, upstream: String) -> Proxy {
        Proxy::serve(listener, upstream, None)
    }

    /// Serves TLS with `acceptor` on `listener` (bound by the caller first, so its port can
    /// be advertised by a broker before the proxy starts), relaying decrypted to `upstream`.
    /// It counts its handshakes, so a test can tell that TLS was really spoken, and refused
    /// when it should be.
    pub fn start_tls(listener: TcpListener, upstream: String, acceptor: SslAcceptor) -> Proxy {
        Proxy::serve(listener, upstream, Some(Arc::new(acceptor)))
    }

    fn serve(listener: TcpListener, upstream: String, tls: Option<Arc<SslAcceptor>>) -> Proxy {
        let address = listener.local_addr().expect("bound").to_string();
        listener.set_nonblocking(true).expect("non-blocking");
        let handshakes = Arc::new(Handshakes::default());
        let counts = handshakes.clone();
        let (fault, faults) = watch::channel(Fault::None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("test-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the proxy");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                    tokio::pin!(stopped);
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((client, _)) = accepted else { continue };
                                let (upstream, faults) = (upstream.clone(), faults.clone());
                                match &tls {
                                    Some(acceptor) => {
                                        tokio::spawn(relay_tls(client, acceptor.clone(), upstream, counts.clone(), faults));
                                    }
                                    None => {
                                        tokio::spawn(relay(client, upstream, faults));
                                    }
                                }
                            }
                        }
                    }
                });
            })
            .expect("spawning the proxy thread");
        Proxy {
            address,
            handshakes,
            fault,
            _stop: stop,
        }
    }

    /// `127.0.0.1:PORT` of the listener.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn handshakes(&self) -> &Handshakes {
        &self.handshakes
    }

    /// From now on, does `fault` to new connections and those relayed already.
    pub fn set_fault(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

async fn relay_tls(
    client: tokio::net::TcpStream,
    acceptor: Arc<SslAcceptor>,
    upstream: String,
    handshakes: Arc<Handshakes>,
    faults: watch::Receiver<Fault>,
) {
    let Ok(mut tls) = Ssl::new(acceptor.context()).and_then(|ssl| SslStream::new(ssl, client))
    else {
        return;
    };
    if Pin::new(&mut tls).accept().await.is_err() {
        // A client that does not trust this certificate ends the handshake.
        handshakes.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    handshakes.completed.fetch_add(1, Ordering::Relaxed);
    relay(tls, upstream, faults).await;
}

/// Relays `client` to `upstream` until either side closes or a fault starts (or the proxy
/// is dropped with its runtime).
async fn relay(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: String,
    mut faults: watch::Receiver<Fault>,
) {
    let fault = *faults.borrow_and_update();
    if fault == Fault::None
        && let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await
    {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = faults.wait_for(|fault| *fault != Fault::None) => {}
        }
    }
    if *faults.borrow() == Fault::Blackhole {
        // Open and silent until the outage ends; then closed, as a reset path would be.
        let _ = faults.wait_for(|fault| *fault != Fault::Blackhole).await;
    }
}
