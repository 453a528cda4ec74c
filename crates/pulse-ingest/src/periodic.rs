//! [`Periodic`]: a job that runs every interval off the ingest path, one run at a time.
//!
//! Checkpoints and rollups both take a copy of the state at a barrier and then work for a
//! while (encoding, writing, fsyncing, sending) on another task, while ingestion goes on.
//! This is that schedule, once: the source loop asks [`Periodic::due`] on every refresh,
//! starts a run with the copy, collects a finished run with [`Periodic::poll`], and waits
//! for the last one with [`Periodic::wait`] at a clean stop. Dropping it detaches a run in
//! flight (the task finishes or is cut off with the runtime), which is what a crash does
//! too, so every job is written to survive that.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::{JoinError, JoinHandle};

#[derive(Debug)]
pub struct Periodic<T> {
    interval: Duration,
    last_started: Instant,
    in_flight: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Periodic<T> {
    /// The first run is due one `interval` from now.
    pub fn new(interval: Duration) -> Periodic<T> {
        Periodic {
            interval,
            last_started: Instant::now(),
            in_flight: None,
        }
    }

    /// Whether it is time for the next run (and none is in flight).
    pub fn due(&self) -> bool {
        self.in_flight.is_none() && self.last_started.elapsed() >= self.interval
    }

    pub fn is_running(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Starts a run on the async runtime. Call only when none is in flight ([`Self::wait`]
    /// first otherwise): one run at a time is the point.
    pub fn start(&mut self, run: impl Future<Output = T> + Send + 'static) {
        debug_assert!(self.in_flight.is_none(), "one run at a time");
        self.last_started = Instant::now();
        self.in_flight = Some(tokio::spawn(run));
    }

    /// The outcome of a run that has finished since the last call, without waiting.
    pub async fn poll(&mut self) -> Option<Result<T, JoinError>> {
        if self.in_flight.as_ref().is_some_and(JoinHandle::is_finished) {
            self.wait().await
        } else {
            None
        }
    }

    /// Waits for the run in flight, if any.
    pub async fn wait(&mut self) -> Option<Result<T, JoinError>> {
        Some(self.in_flight.take()?.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_run_at_a_time_every_interval() {
        let mut job: Periodic<u32> = Periodic::new(Duration::ZERO);
        assert!(job.due());
        assert!(job.poll().await.is_none(), "nothing started yet");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        job.start(async move {
            released.await.unwrap();
            7
        });
        assert!(!job.due(), "not while a run is in flight");
        assert!(job.poll().await.is_none(), "still running");
        release.send(()).unwrap();
        assert_eq!(job.wait().await.unwrap().unwrap(), 7);
        assert!(job.due());
        job.start(async { 8 });
        assert_eq!(job.wait().await.unwrap().unwrap(), 8);
        assert!(job.wait().await.is_none());

        let slow: Periodic<()> = Periodic::new(Duration::from_secs(3600));
        assert!(!slow.due(), "the first run is one interval away");
    }
}
