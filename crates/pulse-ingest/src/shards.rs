//! Shard threads: each owns one [`Shard`] and applies what the router sends, in order.
//!
//! Shards are CPU-bound, so they run on plain OS threads rather than async tasks, and block
//! on a bounded tokio channel. Commands are processed strictly in order, which is what makes
//! a `Summarize` a barrier: its reply proves every batch sent before it has been applied.
//! Dropping the [`ShardPool`] closes the channels; the threads finish their queue and exit.

use std::thread::JoinHandle;

use pulse_core::EngineSettings;
use pulse_core::shard::{Shard, ShardEvent, ShardState};
use pulse_core::summary::{ShardSummary, SummaryPoint};
use tokio::sync::{mpsc, oneshot};

/// Batches that may wait per shard before the router blocks.
const QUEUE: usize = 8;

enum Command {
    Apply {
        events: Vec<ShardEvent>,
        watermark_ms: Option<i64>,
    },
    Summarize {
        at: SummaryPoint,
        reply: oneshot::Sender<ShardSummary>,
    },
    CloseAll,
    Export {
        reply: oneshot::Sender<ShardState>,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0} stopped unexpectedly")]
pub struct ShardStopped(pub usize);

#[derive(Debug)]
pub struct ShardPool {
    senders: Vec<mpsc::Sender<Command>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Apply { .. } => "Apply",
            Command::Summarize { .. } => "Summarize",
            Command::CloseAll => "CloseAll",
            Command::Export { .. } => "Export",
        })
    }
}

impl ShardPool {
    /// Starts one thread per shard, from saved states when given.
    pub fn start(
        settings: &EngineSettings,
        states: Option<Vec<ShardState>>,
    ) -> std::io::Result<ShardPool> {
        let shards: Vec<Shard> = match states {
            Some(states) => states
                .into_iter()
                .map(|s| Shard::with_state(settings, s))
                .collect(),
            None => (0..settings.shards).map(|_| Shard::new(settings)).collect(),
        };
        let mut senders = Vec::with_capacity(shards.len());
        let mut threads = Vec::with_capacity(shards.len());
        for (index, mut shard) in shards.into_iter().enumerate() {
            let (sender, mut receiver) = mpsc::channel::<Command>(QUEUE);
            let thread = std::thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || {
                    while let Some(command) = receiver.blocking_recv() {
                        match command {
                            Command::Apply {
                                events,
                                watermark_ms,
                            } => {
                                events.iter().for_each(|e| shard.apply(e));
                                if let Some(watermark) = watermark_ms {
                                    shard.advance(watermark);
                                }
                            }
                            Command::Summarize { at, reply } => {
                                let _ = reply.send(shard.summarize(at));
                            }
                            Command::CloseAll => shard.close_all(),
                            Command::Export { reply } => {
                                let _ = reply.send(shard.state().clone());
                            }
                        }
                    }
                })?;
            senders.push(sender);
            threads.push(thread);
        }
        Ok(ShardPool { senders, threads })
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Sends a batch; waits while the shard's queue is full.
    pub async fn apply(
        &self,
        shard: usize,
        events: Vec<ShardEvent>,
        watermark_ms: Option<i64>,
    ) -> Result<(), ShardStopped> {
        self.send(
            shard,
            Command::Apply {
                events,
                watermark_ms,
            },
        )
        .await
    }

    /// A barrier across all shards that also returns their summaries.
    pub async fn summarize(&self, at: SummaryPoint) -> Result<Vec<ShardSummary>, ShardStopped> {
        let mut replies = Vec::with_capacity(self.len());
        for shard in 0..self.len() {
            let (reply, answer) = oneshot::channel();
            self.send(shard, Command::Summarize { at, reply }).await?;
            replies.push(answer);
        }
        let mut summaries = Vec::with_capacity(replies.len());
        for (shard, answer) in replies.into_iter().enumerate() {
            summaries.push(answer.await.map_err(|_| ShardStopped(shard))?);
        }
        Ok(summaries)
    }

    /// Closes every open session (end of a finite input).
    pub async fn close_all(&self) -> Result<(), ShardStopped> {
        for shard in 0..self.len() {
            self.send(shard, Command::CloseAll).await?;
        }
        Ok(())
    }

    /// Copies of every shard's state, after everything sent before has been applied.
    pub async fn export(&self) -> Result<Vec<ShardState>, ShardStopped> {
        let mut states = Vec::with_capacity(self.len());
        for shard in 0..self.len() {
            let (reply, answer) = oneshot::channel();
            self.send(shard, Command::Export { reply }).await?;
            states.push(answer.await.map_err(|_| ShardStopped(shard))?);
        }
        Ok(states)
    }

    async fn send(&self, shard: usize, command: Command) -> Result<(), ShardStopped> {
        self.senders[shard]
            .send(command)
            .await
            .map_err(|_| ShardStopped(shard))
    }

    /// Stops the threads after they drain their queues.
    pub fn join(self) {
        drop(self.senders);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
