//! `pulse loadgen`'s producer: the generated workload to a Kafka topic (feature `kafka`).
//!
//! The one part of this crate that does I/O, kept apart so that the generator stays pure:
//! it asks the generator for history and then, as the wall clock (passed in) moves, for live
//! events, and sends each keyed by its user, so that a user's events stay in one partition
//! and in order. Creating the topic is the caller's job (it knows the consumer's
//! administration settings).

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{ConfigError, Generator, WorkloadConfig};

/// What to produce, and where.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// The client settings (brokers, TLS, SASL, tuning); `linger.ms` and
    /// `compression.type` get throughput-friendly defaults unless set here.
    pub client: ClientConfig,
    pub topic: String,
    /// Events per second; `None` is as fast as the broker takes them.
    pub rate: Option<u64>,
    /// Stop after this many events; `None` produces the history and then stops.
    pub events: Option<u64>,
    pub workload: WorkloadConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create the Kafka producer: {0}")]
    Producer(KafkaError),
    #[error("{failed} of {sent} events were not delivered; first error: {first}")]
    Delivery {
        failed: u64,
        sent: u64,
        first: String,
    },
    #[error("invalid workload: {0}")]
    Workload(#[from] ConfigError),
}

/// Produces the synthetic workload (history, then live events up to `wall_ms()` if more
/// are asked for), keyed by user. Returns the count sent.
pub async fn produce(
    options: &ProducerOptions,
    wall_ms: impl Fn() -> i64,
    shutdown: impl Future<Output = ()>,
) -> Result<u64, ProduceError> {
    const IN_FLIGHT: usize = 20_000;
    let mut config = options.client.clone();
    for (key, value) in [("linger.ms", "20"), ("compression.type", "lz4")] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    let producer: FutureProducer = config.create().map_err(ProduceError::Producer)?;
    let mut generator = Generator::new(&options.workload)?;
    let history_end = options.workload.end_ms;
    let mut history = generator.events_until(history_end + 1);
    history.extend(generator.flush());
    let started = Instant::now();
    let (mut sent, mut failed, mut first_error) = (0u64, 0u64, None::<String>);
    let mut in_flight = FuturesUnordered::new();
    let mut line = String::new();
    let mut live_cursor = history_end + 1;
    let mut pending = history.into_iter();
    tokio::pin!(shutdown);
    loop {
        if options.events.is_some_and(|limit| sent >= limit) {
            break;
        }
        let event = match pending.next() {
            Some(event) => event,
            None if options.events.is_none() => break,
            None => {
                // History exhausted: keep generating as time passes.
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let now = wall_ms().max(live_cursor + 1);
                pending = generator.events_until(now).into_iter();
                live_cursor = now;
                continue;
            }
        };
        if let Some(rate) = options.rate {
            let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        line.clear();
        event.write_json(&mut line);
        let key = event.user.to_string();
        let record = FutureRecord::to(&options.topic).key(&key).payload(&line);
        match producer.send_result(record) {
            Ok(delivery) => in_flight.push(delivery),
            Err((error, _)) => {
                failed += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
        sent += 1;
        while in_flight.len() >= IN_FLIGHT {
            tally(in_flight.next().await, &mut failed, &mut first_error);
        }
        if sent.is_multiple_of(100_000) {
            tracing::info!(
                sent,
                per_second = (sent as f64 / started.elapsed().as_secs_f64()).round(),
                "Producing."
            );
        }
    }
    while let Some(result) = in_flight.next().await {
        tally(Some(result), &mut failed, &mut first_error);
    }
    tracing::info!(sent, failed, seconds = started.elapsed().as_secs_f64(), topic = %options.topic, "Loadgen finished.");
    match first_error {
        Some(first) => Err(ProduceError::Delivery {
            failed,
            sent,
            first,
        }),
        None => Ok(sent),
    }
}

type Delivery = Result<
    Result<
        rdkafka::producer::future_producer::Delivery,
        (KafkaError, rdkafka::message::OwnedMessage),
    >,
    futures::channel::oneshot::Canceled,
>;

fn tally(result: Option<Delivery>, failed: &mut u64, first_error: &mut Option<String>) {
    let error = match result {
        Some(Ok(Ok(_))) | None => return,
        Some(Ok(Err((error, _)))) => error.to_string(),
        Some(Err(_)) => "delivery cancelled".to_owned(),
    };
    *failed += 1;
    first_error.get_or_insert(error);
}
