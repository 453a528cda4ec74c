//! NDJSON input prepared (decoded, users hashed) on several threads, handed back in order.
//!
//! The calling thread reads the input in blocks of whole lines and deals them round-robin
//! to the decoding threads; it takes the results back from the same threads in the same
//! round-robin order, so they arrive exactly in input order and whoever consumes them (the
//! router) sees the single-threaded stream. Only [`Decoder::prepare`], which is pure, runs
//! on the decoding threads.
//!
//! Why the calling thread reads: stdin's lock cannot move to another thread, and reading a
//! block is a copy, cheap next to decoding it. It reads straight into the block: through a
//! `BufReader`, the extra copy of every byte cost 3 % of a replay's CPU. Why round-robin
//! rather than a shared queue: it keeps the order without sequence numbers or a reordering
//! buffer. Blocks are of equal size, so the threads stay evenly loaded.
//!
//! At most `threads × DEPTH` blocks are in flight, and their buffers are reused, so memory
//! stays bounded (a few blocks) however large the input.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::{Context, Result, anyhow};
use pulse_core::decode::Decoder;
use pulse_core::prepare::PreparedBatch;

/// Blocks queued per decoding thread: one being decoded, one waiting.
const DEPTH: usize = 2;

/// A block of lines and, once a decoding thread has been through it, its records.
#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    records: PreparedBatch,
    lines: u64,
}

/// What `consume` is given for each block, in input order.
pub struct Prepared<'a> {
    /// The block's non-blank lines, prepared.
    pub records: &'a PreparedBatch,
    /// Lines read, blank ones included.
    pub lines: u64,
}

/// Reads `input` to its end, prepares its lines on `threads` threads in blocks of about
/// `block_bytes`, and calls `consume` for each block in input order. Blank lines are
/// skipped; surrounding ASCII whitespace (a `\r`) is not part of a record.
pub fn prepare_lines(
    mut input: impl Read,
    decoder: &Decoder,
    threads: usize,
    block_bytes: usize,
    mut consume: impl FnMut(Prepared<'_>) -> Result<()>,
) -> Result<()> {
    let threads = threads.max(1);
    std::thread::scope(|scope| {
        let mut to_threads: Vec<SyncSender<Block>> = Vec::with_capacity(threads);
        let mut from_threads: Vec<Receiver<Block>> = Vec::with_capacity(threads);
        for index in 0..threads {
            let (to_thread, todo) = sync_channel::<Block>(DEPTH);
            let (done, from_thread) = sync_channel::<Block>(DEPTH);
            std::thread::Builder::new()
                .name(format!("decode-{index}"))
                .spawn_scoped(scope, move || {
                    for mut block in todo {
                        prepare_block(decoder, &mut block);
                        if done.send(block).is_err() {
                            break; // The reader has stopped.
                        }
                    }
                })
                .context("starting a decoding thread")?;
            to_threads.push(to_thread);
            from_threads.push(from_thread);
        }
        let stopped = || anyhow!("a decoding thread stopped unexpectedly");
        let mut spare: Vec<Block> = Vec::new();
        let mut tail = Vec::new();
        let (mut sent, mut received) = (0usize, 0usize);
        let mut at_end = false;
        loop {
            while !at_end && sent - received < threads * DEPTH {
                let mut block = spare.pop().unwrap_or_default();
                if read_block(&mut input, &mut block.bytes, &mut tail, block_bytes)? {
                    to_threads[sent % threads]
                        .send(block)
                        .map_err(|_| stopped())?;
                    sent += 1;
                } else {
                    at_end = true;
                }
            }
            if received == sent {
                return Ok(());
            }
            let block = from_threads[received % threads]
                .recv()
                .map_err(|_| stopped())?;
            received += 1;
            consume(Prepared {
                records: &block.records,
                lines: block.lines,
            })?;
            spare.push(block);
        }
        // Returning drops `to_threads`: the decoding threads see their queues close and end.
    })
}

/// Bytes read past a block's target at a time while looking for the end of its last line.
const OVERSHOOT: usize = 1024;

/// Fills `block` with whole lines until it holds at least `target` bytes or the input ends;
/// `false` when there was nothing left to read. `tail` carries the start of a line that was
/// read past the end of one block on to the next.
fn read_block(
    input: &mut impl Read,
    block: &mut Vec<u8>,
    tail: &mut Vec<u8>,
    target: usize,
) -> io::Result<bool> {
    block.clear();
    block.append(tail);
    let mut searched = 0;
    loop {
        // Cut after the first newline that takes the block to its target, once it is here.
        if block.len() >= target {
            let from = searched.max(target.saturating_sub(1));
            if let Some(at) = memchr::memchr(b'\n', &block[from..]) {
                let cut = from + at + 1;
                tail.extend_from_slice(&block[cut..]);
                block.truncate(cut);
                return Ok(true);
            }
            searched = block.len();
        }
        let wanted = target.saturating_sub(block.len()).max(OVERSHOOT);
        block.reserve(wanted);
        // `read_to_end` reads into the spare capacity without zeroing it first.
        if input.by_ref().take(wanted as u64).read_to_end(block)? == 0 {
            return Ok(!block.is_empty());
        }
    }
}

fn prepare_block(decoder: &Decoder, block: &mut Block) {
    block.records.clear();
    block.lines = 0;
    let bytes = block.bytes.as_slice();
    let mut start = 0;
    while start < bytes.len() {
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |at| start + at);
        block.lines += 1;
        let record = bytes[start..end].trim_ascii();
        if !record.is_empty() {
            block.records.prepare(decoder, record);
        }
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_core::EngineSettings;
    use pulse_core::dimensions::ValueBuffer;

    /// A reader that hands out at most 37 bytes a read, as a pipe may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(37).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Every line comes back once, in order, whatever the block size and thread count,
    /// including a last line without a newline, blank lines and a line longer than a block.
    #[test]
    fn records_come_back_in_input_order() {
        let decoder = Decoder::new(&EngineSettings::default());
        let mut text = String::new();
        for i in 0..500 {
            match i % 50 {
                7 => text.push_str("\n  \r\n"),
                11 => text.push_str("not json\n"),
                13 => text.push_str(&format!(
                    "{{\"user_id\":\"u{i}\",\"event\":\"x\",\"pad\":\"{}\"}}\r\n",
                    "p".repeat(300)
                )),
                _ => text.push_str(&format!(
                    "{{\"user_id\":\"u{i}\",\"event\":\"feature_used\",\"feature\":\"f{i}\",\"ts\":{i}}}\n"
                )),
            }
        }
        text.push_str(r#"{"user_id":"last","event":"x","ts":1}"#);
        let expected: Vec<_> = text
            .lines()
            .map(str::trim_ascii)
            .filter(|l| !l.is_empty())
            .map(|l| {
                format!(
                    "{:?}",
                    decoder.prepare(l.as_bytes(), &mut ValueBuffer::default())
                )
            })
            .collect();
        let expected_lines = text.split('\n').count() as u64;
        for (threads, block_bytes) in [(1, 1), (2, 64), (3, 100), (4, 1 << 20)] {
            let mut seen = Vec::new();
            let mut lines = 0;
            let input = Trickle(text.as_bytes());
            prepare_lines(input, &decoder, threads, block_bytes, |block| {
                lines += block.lines;
                seen.extend(block.records.iter().map(|r| format!("{r:?}")));
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, expected, "{threads} threads, blocks of {block_bytes}");
            assert_eq!(lines, expected_lines);
        }
    }

    #[test]
    fn an_error_of_the_consumer_stops_the_threads() {
        let decoder = Decoder::new(&EngineSettings::default());
        let text = "{\"user_id\":\"u\",\"event\":\"x\"}\n".repeat(10_000);
        let mut calls = 0;
        let result = prepare_lines(text.as_bytes(), &decoder, 2, 100, |_| {
            calls += 1;
            if calls == 3 {
                Err(anyhow!("stop"))
            } else {
                Ok(())
            }
        });
        assert_eq!(result.unwrap_err().to_string(), "stop");
        assert_eq!(calls, 3);
    }
}
