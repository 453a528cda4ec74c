//! Worker threads: each owns one [`Worker`] (a share of the partitions) and applies what
//! the router sends, in order.
//!
//! Workers are CPU-bound, so they run on plain OS threads rather than async tasks, and
//! block on a bounded tokio channel. Commands are processed strictly in order, which is
//! what makes a `Summarize` a barrier: its reply proves every batch sent before it has
//! been applied. Dropping the [`WorkerPool`] closes the channels; the threads finish their
//! queue and exit. Senders work from async code (`.await`) and from plain threads
//! (`pulse replay`), so every runner uses the same pool.

use std::thread::JoinHandle;

use pulse_core::EngineSettings;
use pulse_core::event::PartitionEvent;
use pulse_core::families::{KpiState, Summary};
use pulse_core::windows::SummaryPoint;
use pulse_core::worker::{Worker, owner_of};
use tokio::sync::{mpsc, oneshot};

/// Batches that may wait per worker before the router blocks.
const QUEUE: usize = 8;

enum Command {
    Apply {
        events: Vec<PartitionEvent>,
        watermark_ms: Option<i64>,
    },
    Summarize {
        at: SummaryPoint,
        reply: oneshot::Sender<Summary>,
    },
    SummarizeEach {
        at: SummaryPoint,
        reply: oneshot::Sender<Vec<(usize, Summary)>>,
    },
    CloseAll,
    Export {
        reply: oneshot::Sender<Vec<(usize, KpiState)>>,
    },
    /// A partition this instance has taken over: its slot gets the state.
    Install {
        partition: usize,
        /// Boxed: a state is hundreds of bytes, a command otherwise a few words.
        state: Box<KpiState>,
    },
    /// A partition this instance gives up: its state back, its slot empty.
    Take {
        partition: usize,
        reply: oneshot::Sender<Option<KpiState>>,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("worker {0} stopped unexpectedly")]
pub struct WorkerStopped(pub usize);

#[derive(Debug)]
pub struct WorkerPool {
    senders: Vec<mpsc::Sender<Command>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Apply { .. } => "Apply",
            Command::Summarize { .. } => "Summarize",
            Command::SummarizeEach { .. } => "SummarizeEach",
            Command::CloseAll => "CloseAll",
            Command::Export { .. } => "Export",
            Command::Install { .. } => "Install",
            Command::Take { .. } => "Take",
        })
    }
}

impl WorkerPool {
    /// Starts `settings.shards` worker threads, each given the saved partitions it owns.
    pub fn start(
        settings: &EngineSettings,
        saved: Vec<(usize, KpiState)>,
    ) -> std::io::Result<WorkerPool> {
        let mut workers: Vec<Worker> = (0..settings.shards)
            .map(|index| Worker::new(settings, index))
            .collect();
        for (partition, state) in saved {
            workers[owner_of(partition, settings.shards)].restore(partition, state);
        }
        let mut senders = Vec::with_capacity(workers.len());
        let mut threads = Vec::with_capacity(workers.len());
        for (index, mut worker) in workers.into_iter().enumerate() {
            let (sender, mut receiver) = mpsc::channel::<Command>(QUEUE);
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    while let Some(command) = receiver.blocking_recv() {
                        match command {
                            Command::Apply {
                                events,
                                watermark_ms,
                            } => worker.apply(&events, watermark_ms),
                            Command::Summarize { at, reply } => {
                                let _ = reply.send(worker.summarize(at));
                            }
                            Command::SummarizeEach { at, reply } => {
                                let _ = reply.send(worker.summarize_each(at));
                            }
                            Command::CloseAll => worker.close_all(),
                            Command::Export { reply } => {
                                let _ = reply.send(worker.export());
                            }
                            Command::Install { partition, state } => {
                                worker.restore(partition, *state);
                            }
                            Command::Take { partition, reply } => {
                                let _ = reply.send(worker.take(partition));
                            }
                        }
                    }
                })?;
            senders.push(sender);
            threads.push(thread);
        }
        Ok(WorkerPool { senders, threads })
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Sends a batch; waits while the worker's queue is full.
    pub async fn apply(
        &self,
        worker: usize,
        events: Vec<PartitionEvent>,
        watermark_ms: Option<i64>,
    ) -> Result<(), WorkerStopped> {
        self.send(
            worker,
            Command::Apply {
                events,
                watermark_ms,
            },
        )
        .await
    }

    /// A barrier across all workers that also returns their summaries.
    pub async fn summarize(&self, at: SummaryPoint) -> Result<Vec<Summary>, WorkerStopped> {
        self.ask_all(|reply| Command::Summarize { at, reply }).await
    }

    /// A barrier that returns every partition's summary, by partition number.
    pub async fn summarize_each(
        &self,
        at: SummaryPoint,
    ) -> Result<Vec<(usize, Summary)>, WorkerStopped> {
        let replies = self
            .ask_all(|reply| Command::SummarizeEach { at, reply })
            .await?;
        Ok(replies.into_iter().flatten().collect())
    }

    /// Sends every worker the command `ask` makes, then collects the replies: all workers
    /// work on it at once.
    async fn ask_all<T>(
        &self,
        ask: impl Fn(oneshot::Sender<T>) -> Command,
    ) -> Result<Vec<T>, WorkerStopped> {
        let mut replies = Vec::with_capacity(self.len());
        for worker in 0..self.len() {
            let (reply, answer) = oneshot::channel();
            self.send(worker, ask(reply)).await?;
            replies.push(answer);
        }
        let mut answers = Vec::with_capacity(replies.len());
        for (worker, answer) in replies.into_iter().enumerate() {
            answers.push(answer.await.map_err(|_| WorkerStopped(worker))?);
        }
        Ok(answers)
    }

    /// Closes every open session (end of a finite input).
    pub async fn close_all(&self) -> Result<(), WorkerStopped> {
        for worker in 0..self.len() {
            self.send(worker, Command::CloseAll).await?;
        }
        Ok(())
    }

    /// Copies of every partition's KPI state, by partition number, after everything sent
    /// before has been applied.
    pub async fn export(&self) -> Result<Vec<(usize, KpiState)>, WorkerStopped> {
        let mut states = Vec::new();
        for worker in 0..self.len() {
            let (reply, answer) = oneshot::channel();
            self.send(worker, Command::Export { reply }).await?;
            states.extend(answer.await.map_err(|_| WorkerStopped(worker))?);
        }
        Ok(states)
    }

    /// Hands `partition`'s state to its worker (after every batch sent before).
    pub async fn install(&self, partition: usize, state: KpiState) -> Result<(), WorkerStopped> {
        let worker = owner_of(partition, self.len());
        let state = Box::new(state);
        self.send(worker, Command::Install { partition, state })
            .await
    }

    /// Takes `partition`'s state back from its worker, after every batch sent before;
    /// `None` if it held none.
    pub async fn take(&self, partition: usize) -> Result<Option<KpiState>, WorkerStopped> {
        let worker = owner_of(partition, self.len());
        let (reply, answer) = oneshot::channel();
        self.send(worker, Command::Take { partition, reply })
            .await?;
        answer.await.map_err(|_| WorkerStopped(worker))
    }

    async fn send(&self, worker: usize, command: Command) -> Result<(), WorkerStopped> {
        self.senders[worker]
            .send(command)
            .await
            .map_err(|_| WorkerStopped(worker))
    }

    /// Stops the threads after they drain their queues.
    pub fn join(self) {
        drop(self.senders);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
