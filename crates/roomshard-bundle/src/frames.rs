//! zstd in independent frames, compressed side by side on worker threads and written in order.
//!
//! Why not zstd's own multithreading (`zstdmt`): measured on the standard workload
//! (docs/benchmarks.md), it made exports slower on two cores and cost ~48 MiB of buffers, and
//! the writer thread still hashed and framed alone. A bundle is one or more concatenated frames
//! (docs/bundle-format.md §1), so the tar stream can be cut every [`FRAME_BYTES`] into frames
//! that need nothing from each other: the calling thread frames and hashes entries and hashes and
//! writes the compressed output, while `workers` threads compress. At most `workers + 1` frames
//! are in flight, so memory stays about (workers + 1) × 4 MiB (each frame's input and output;
//! 13 MiB more than one frame, measured with 2 workers) whatever the archive's size, and the
//! bytes depend only on the input, the level and [`FRAME_BYTES`] — never on the number of
//! workers.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

/// Tar-stream bytes per frame: zstd -3's own window (2^21), so cutting costs little ratio.
pub const FRAME_BYTES: usize = 1 << 21;

/// The result of one frame: its input buffer back (for reuse) and the compressed frame.
type Done = io::Result<(Vec<u8>, Vec<u8>)>;

/// One frame to compress, and where to answer.
struct Job {
    input: Vec<u8>,
    output: Vec<u8>,
    reply: mpsc::SyncSender<Done>,
}

/// A [`Write`] that compresses into independent zstd frames of [`FRAME_BYTES`] on worker
/// threads; [`finish`](Self::finish) writes the last frame and returns the inner writer.
pub(crate) struct FrameEncoder<W: Write> {
    /// `None` only once `finish` has taken it.
    out: Option<W>,
    buf: Vec<u8>,
    submitted: bool,
    jobs: Option<mpsc::SyncSender<Job>>,
    pending: VecDeque<mpsc::Receiver<Done>>,
    spare_inputs: Vec<Vec<u8>>,
    spare_outputs: Vec<Vec<u8>>,
    max_pending: usize,
    workers: Vec<JoinHandle<()>>,
}

fn workers_gone() -> io::Error {
    io::Error::other("a zstd worker thread stopped")
}

impl<W: Write> FrameEncoder<W> {
    /// Starts `workers` (at least 1) compression threads at `level`, each frame carrying its
    /// content checksum.
    pub(crate) fn new(out: W, level: i32, workers: u32) -> io::Result<Self> {
        let workers = workers.max(1) as usize;
        let (tx, rx) = mpsc::sync_channel::<Job>(workers);
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(workers);
        for n in 0..workers {
            let rx = Arc::clone(&rx);
            let mut cctx = zstd::bulk::Compressor::new(level)?;
            cctx.include_checksum(true)?;
            let handle = std::thread::Builder::new()
                .name(format!("roomshard-zstd-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(guard) => match guard.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            },
                            Err(_) => return,
                        };
                        let Job {
                            input,
                            mut output,
                            reply,
                        } = job;
                        output.clear();
                        output.reserve(zstd::zstd_safe::compress_bound(input.len()));
                        let done = cctx
                            .compress_to_buffer(input.as_slice(), &mut output)
                            .map(|_| (input, output));
                        // The encoder may have been dropped (an error elsewhere): nothing to do.
                        let _ = reply.send(done);
                    }
                })?;
            handles.push(handle);
        }
        Ok(FrameEncoder {
            out: Some(out),
            buf: Vec::with_capacity(FRAME_BYTES),
            submitted: false,
            jobs: Some(tx),
            pending: VecDeque::new(),
            spare_inputs: Vec::new(),
            spare_outputs: Vec::new(),
            max_pending: workers + 1,
            workers: handles,
        })
    }

    /// Hands the filled buffer to a worker, first writing the oldest frame when enough are in
    /// flight.
    fn submit(&mut self) -> io::Result<()> {
        if self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let next = self
            .spare_inputs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FRAME_BYTES));
        let input = std::mem::replace(&mut self.buf, next);
        let output = self.spare_outputs.pop().unwrap_or_default();
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .ok_or_else(workers_gone)?
            .send(Job {
                input,
                output,
                reply,
            })
            .map_err(|_| workers_gone())?;
        self.pending.push_back(answer);
        self.submitted = true;
        Ok(())
    }

    /// Waits for the oldest frame in flight and writes it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(answer) = self.pending.pop_front() else {
            return Ok(());
        };
        let (mut input, output) = answer.recv().map_err(|_| workers_gone())??;
        self.out
            .as_mut()
            .ok_or_else(workers_gone)?
            .write_all(&output)?;
        input.clear();
        self.spare_inputs.push(input);
        self.spare_outputs.push(output);
        Ok(())
    }

    /// Compresses what is buffered as the last frame (an empty stream is one empty frame),
    /// writes every frame in order, flushes and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || !self.submitted {
            self.submit()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let mut out = self.out.take().ok_or_else(workers_gone)?;
        out.flush()?;
        // Dropping `self` joins the workers.
        Ok(out)
    }

    /// Ends the job queue and joins the workers (each ends when the queue is closed).
    fn stop_workers(&mut self) {
        self.jobs = None;
        self.pending.clear();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

impl<W: Write> Write for FrameEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = FRAME_BYTES - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(data.get(..n).unwrap_or(data));
        if self.buf.len() == FRAME_BYTES {
            self.submit()?;
        }
        Ok(n)
    }

    /// Writes the frames already compressed, never a frame boundary: where the frames are cut
    /// depends on the bytes alone.
    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl<W: Write> Drop for FrameEncoder<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Threads of this process named like the workers (this is the only test in the lib's
    /// binary that starts any).
    fn workers_running() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| t.ok())
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .filter(|name| name.starts_with("roomshard-zstd"))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn finishing_or_abandoning_stops_the_workers_and_frames_follow_the_bytes_only() {
        let data: Vec<u8> = (0..(FRAME_BYTES * 2 + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        // Abandoned half-way (an error elsewhere): the workers stop, nothing more is written.
        let mut e = FrameEncoder::new(Vec::new(), 3, 3).unwrap();
        // A thread names itself once it runs: wait for all three (a few ms at most).
        let started = std::time::Instant::now();
        while workers_running() < 3 && started.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(workers_running(), 3);
        e.write_all(&data).unwrap();
        drop(e);
        assert_eq!(
            workers_running(),
            0,
            "dropping the encoder left workers running"
        );

        // Finished: the same bytes for 1 and 3 workers however the input was split into
        // writes, three frames, and no worker left.
        let mut one = FrameEncoder::new(Vec::new(), 3, 1).unwrap();
        one.write_all(&data).unwrap();
        let one = one.finish().unwrap();
        let mut three = FrameEncoder::new(Vec::new(), 3, 3).unwrap();
        for piece in data.chunks(7777) {
            three.write_all(piece).unwrap();
            three.flush().unwrap();
        }
        let three = three.finish().unwrap();
        assert!(
            one == three,
            "the frames depend on the workers or the writes"
        );
        assert_eq!(workers_running(), 0, "finishing left workers running");
        assert_eq!(zstd::decode_all(one.as_slice()).unwrap(), data);
        let first = zstd::zstd_safe::find_frame_compressed_size(&one).unwrap();
        assert!(first < one.len(), "one frame for {} bytes", data.len());

        // An empty stream is one empty frame.
        let empty = FrameEncoder::new(Vec::new(), 3, 2)
            .unwrap()
            .finish()
            .unwrap();
        assert!(!empty.is_empty());
        assert!(zstd::decode_all(empty.as_slice()).unwrap().is_empty());
    }
}
