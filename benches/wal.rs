//! WAL throughput against the disk's own floor, measured in the same run on the same file system.
//!
//! Two payload kinds, both at 64 KiB, 512 KiB and 4 MiB:
//! - `*_incompressible`: one label of random printable bytes (snappy cannot shrink it; the WAL
//!   stores it plain). A worst case, not what the scheduler appends.
//! - `*_prompb`: a real window, series shaped like perf-anchors §1 (labels `Host`, `Region`,
//!   `ServiceName`, `__name__`, `cluster`; one sample each), sized by its ENCODED protobuf. The WAL
//!   stores it snappy-compressed (about 6×); `raw` writes the encoded bytes as they are, which is
//!   what a WAL without compression would write.
//!
//! Groups:
//! - `append/wal_incompressible/<size>`: `Wal::append` (encode + snappy + CRC + one
//!   `Durability::Immediate` commit); `append/wal_2pc_incompressible`: the same with redb two-phase
//!   commit (two fsyncs); `append/raw_incompressible`: `write_all` of the snappy bytes to an
//!   append-only file + `fdatasync`.
//! - `append/wal_together_incompressible/<size>`: the same appends from 4 threads at once, one
//!   exporter each (what the scheduler does with 4 windows ready together): they share commits
//!   (group commit), so time per record falls below one fsync's. `append/raw_together_incompressible`:
//!   the raw file given the same sharing (4 records, one `fdatasync`), the fair floor for it.
//!   `WAL_BENCH_COUNTS=1` prints the WAL's commit counts (writes per fsync) after each sample.
//! - `append/wal_prompb/<size>`: `Wal::append_encoded` of the encoded request (snappy + CRC + one
//!   commit); `append/raw_prompb/<size>`: `write_all` of the same encoded bytes + `fdatasync`.
//! - `drain/wal/<size>`: `next_pending` + `read_payload` (decode) + `ack` (one commit) per record;
//!   `drain/raw/<size>`: read the record back + write a 16-byte ack cursor + `fdatasync`.
//! - `encode/encode_snappy_crc_incompressible/<size>`, `encode/snappy_crc_prompb/<size>`: the CPU
//!   part of an append.
//!
//! Files live under `target/wal-bench` (same disk as the repo; /tmp may be tmpfs elsewhere).
//! The figure to watch is raw time / wal time (target ≥ 0.8 for append). The shared virtual disk
//! throttles (fsync of 64 KiB goes from ~0.25 ms to ~2.5 ms for minutes): compare within one run, and
//! only runs where `raw_*/65536` is near 0.25 ms.
//!
//! Measured 2026-11-25 (2 shared cores, ext4 on a virtual disk, unthrottled run; µs per record,
//! mean, wal / raw = ratio): incompressible 64 KiB 363 / 254 = 0.70×; 512 KiB 891 / 513 = 0.58×;
//! 4 MiB 6157 / 4578 = 0.74× (2pc 494 / 1048 / 6243). prompb 64 KiB 364 / 265 = 0.73×; 512 KiB
//! 680 / 544 = 0.80×; 4 MiB 3469 / 4449 = 1.28×. The previous binary, run right after: prompb
//! 0.86× / 0.84× / 1.14×, incompressible 0.68× / 0.57× / 0.61×: the store changes are within noise.
//! CPU: snappy + CRC of prompb 31 / 393 / 2420 µs (another run: 25 / 224 / 2029); at 4 MiB the WAL
//! still beats raw because it writes about 6× fewer bytes.
//! drain (earlier run) 64 KiB wal 306 / raw 141; 512 KiB 602 / 193; 4 MiB 3256 / 700.
//! The remaining gap at small sizes is redb's per-commit page writes (B-tree pages of 5 tables +
//! allocator state beside the payload, ~80–100 µs); the fix is fewer commits: batch appends of
//! several exporters and acks of a drain batch into one transaction.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use adxexporter::prompb::{Label, Sample, TimeSeries, WriteRequest};
use adxexporter::time::Ticks;
use adxexporter::wal::{ExporterRef, RecordHeader, RecordId, Wal, WalConfig};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

mod workload;
use workload::{METRICS, REGIONS};

const SIZES: [usize; 3] = [64 << 10, 512 << 10, 4 << 20];
/// Appenders at once in the `*_together` benches.
const TOGETHER: usize = 4;
const INTERVAL: i64 = 600_000_000;
const BASE: i64 = 638_000_000_000_000_000;
const OUTPUT: &str = "remote_write";

fn bench_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/wal-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn incompressible(bytes: usize) -> WriteRequest {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes as u64;
    let value: String = (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("__name__", "blob"), Label::new("v", value)],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 0,
            }],
        }],
        ..Default::default()
    }
}

/// A real window: series shaped like perf-anchors §1 (rows step → host → metric; labels `Host`,
/// `Region`, `ServiceName`, `__name__`, `cluster`; one sample of a counter or gauge value at a
/// jittered Unix-ms time), as many as make the ENCODED request reach `bytes`.
fn prompb_window(bytes: usize) -> WriteRequest {
    let mut rng: u64 = 0x2026_0101 ^ bytes as u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut request = WriteRequest::default();
    let mut encoded = 0;
    let mut row = 0usize;
    while encoded < bytes {
        let (step, host, metric) = (row / 10_000, (row / 10) % 1000, row % 10);
        let value = if metric < 5 {
            (next() % 1_000_000_000) as f64
        } else {
            (next() >> 11) as f64 / (1u64 << 53) as f64 * 1000.0
        };
        let series = TimeSeries {
            labels: vec![
                Label::new("Host", format!("host-{host:04}")),
                Label::new("Region", REGIONS[host / 100]),
                Label::new("ServiceName", format!("service-{:03}", host % 200)),
                Label::new("__name__", METRICS[metric]),
                Label::new("cluster", "anchor"),
            ],
            samples: vec![Sample {
                value,
                timestamp: 1_767_225_600_000 + step as i64 * 60_000 + (next() % 1000) as i64,
            }],
        };
        let len = series.encoded_len();
        encoded += 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        request.timeseries.push(series);
        row += 1;
    }
    request
}

fn stored(request: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

/// One WAL + its next window, so appends continue across criterion samples.
struct WalBench {
    wal: Wal,
    next: i64,
}

impl WalBench {
    fn new(name: &str, two_phase: bool) -> WalBench {
        let mut config = WalConfig::new(u64::MAX, [OUTPUT]);
        config.two_phase_commit = two_phase;
        WalBench {
            wal: Wal::open(&bench_dir(name), config).unwrap(),
            next: 0,
        }
    }

    fn header(&mut self) -> RecordHeader {
        let start = BASE + self.next * INTERVAL;
        self.next += 1;
        RecordHeader {
            exporter: ExporterRef::new("bench", "ns", "bench"),
            generation: 1,
            window_start: Ticks(start),
            window_end: Ticks(start + INTERVAL),
            created: Ticks(start),
            outputs: vec![],
        }
    }

    fn append(&mut self, request: &WriteRequest) -> RecordId {
        let header = self.header();
        self.wal.append(&header, request).unwrap()
    }

    /// About `records` appends from [`TOGETHER`] threads at once, one exporter each; returns the
    /// time per record times `records` (what criterion expects of `iter_custom`).
    fn append_together(&mut self, request: &WriteRequest, records: u64) -> Duration {
        let each = records.div_ceil(TOGETHER as u64);
        let (wal, first) = (&self.wal, self.next);
        let start = Instant::now();
        std::thread::scope(|s| {
            for w in 0..TOGETHER {
                s.spawn(move || {
                    for n in 0..each as i64 {
                        let start = BASE + (first + n) * INTERVAL;
                        let header = RecordHeader {
                            exporter: ExporterRef::new(format!("bench-{w}"), "ns", "bench"),
                            generation: 1,
                            window_start: Ticks(start),
                            window_end: Ticks(start + INTERVAL),
                            created: Ticks(start),
                            outputs: vec![],
                        };
                        wal.append(&header, request).unwrap();
                    }
                });
            }
        });
        let took = start.elapsed();
        self.next += each as i64;
        if std::env::var_os("WAL_BENCH_COUNTS").is_some() {
            let c = self.wal.commit_counts();
            eprintln!("commits {} writes {}", c.commits, c.writes);
        }
        took.mul_f64(records as f64 / (each * TOGETHER as u64) as f64)
    }

    fn append_encoded(&mut self, encoded: &[u8]) -> RecordId {
        let header = self.header();
        // The sample count only feeds remote write's metric; it does not change what is stored.
        self.wal.append_encoded(&header, encoded, 0).unwrap()
    }

    fn drain_all(&self) -> u64 {
        let mut n = 0;
        loop {
            let batch = self.wal.next_pending(OUTPUT, Ticks::MAX, 1).unwrap();
            let Some(record) = batch.first() else {
                return n;
            };
            let payload = self.wal.read_payload(&record.id).unwrap();
            std::hint::black_box(payload.timeseries.len());
            self.wal.ack(OUTPUT, &record.id).unwrap();
            n += 1;
        }
    }
}

/// Append-only file + fdatasync per record: what any WAL must pay at least.
struct RawLog {
    file: File,
    cursor: File,
    read_pos: u64,
}

impl RawLog {
    fn new(name: &str) -> RawLog {
        let dir = bench_dir(name);
        let open = |p: &str| {
            OpenOptions::new()
                .create(true)
                .read(true)
                .append(p == "log")
                .write(true)
                .open(dir.join(p))
                .unwrap()
        };
        RawLog {
            file: open("log"),
            cursor: open("cursor"),
            read_pos: 0,
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.file.sync_data().unwrap();
    }

    fn write(&mut self, bytes: &[u8]) {
        self.file
            .write_all(&(bytes.len() as u64).to_le_bytes())
            .unwrap();
        self.file.write_all(bytes).unwrap();
    }

    fn drain_one(&mut self, buf: &mut Vec<u8>) {
        self.file.seek(SeekFrom::Start(self.read_pos)).unwrap();
        let mut len = [0u8; 8];
        self.file.read_exact(&mut len).unwrap();
        let len = u64::from_le_bytes(len);
        buf.resize(len as usize, 0);
        self.file.read_exact(buf).unwrap();
        self.read_pos += 8 + len;
        self.cursor.seek(SeekFrom::Start(0)).unwrap();
        self.cursor.write_all(&self.read_pos.to_le_bytes()).unwrap();
        self.cursor.write_all(&[0u8; 8]).unwrap();
        self.cursor.sync_data().unwrap();
    }

    fn reset(&mut self) {
        self.file.set_len(0).unwrap();
        self.read_pos = 0;
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let request = incompressible(size);
        let bytes = stored(&request);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        for (name, two_phase) in [("wal", false), ("wal_2pc", true)] {
            let mut wal = WalBench::new(&format!("append-{name}-{size}"), two_phase);
            group.bench_function(
                BenchmarkId::new(format!("{name}_incompressible"), size),
                |b| {
                    b.iter_custom(|iters| {
                        let start = Instant::now();
                        for _ in 0..iters {
                            wal.append(&request);
                        }
                        let took = start.elapsed();
                        wal.drain_all(); // keep the file from growing across samples (not timed)
                        took
                    })
                },
            );
        }
        let mut raw = RawLog::new(&format!("append-raw-{size}"));
        group.bench_function(BenchmarkId::new("raw_incompressible", size), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    raw.append(&bytes);
                }
                let took = start.elapsed();
                raw.reset();
                took
            })
        });
        let mut wal = WalBench::new(&format!("append-together-{size}"), false);
        group.bench_function(BenchmarkId::new("wal_together_incompressible", size), |b| {
            b.iter_custom(|iters| {
                let took = wal.append_together(&request, iters);
                wal.drain_all();
                took
            })
        });
        group.bench_function(BenchmarkId::new("raw_together_incompressible", size), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for n in 0..iters {
                    raw.write(&bytes);
                    if n % TOGETHER as u64 == TOGETHER as u64 - 1 || n == iters - 1 {
                        raw.file.sync_data().unwrap();
                    }
                }
                let took = start.elapsed();
                raw.reset();
                took
            })
        });
    }
    // The real payload: an encoded WriteRequest, against a WAL that would store it uncompressed.
    for size in SIZES {
        let encoded = prompb_window(size).encode_to_vec();
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        let mut wal = WalBench::new(&format!("append-wal-prompb-{size}"), false);
        group.bench_function(BenchmarkId::new("wal_prompb", size), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    wal.append_encoded(&encoded);
                }
                let took = start.elapsed();
                wal.drain_all();
                took
            })
        });
        let mut raw = RawLog::new(&format!("append-raw-prompb-{size}"));
        group.bench_function(BenchmarkId::new("raw_prompb", size), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    raw.append(&encoded);
                }
                let took = start.elapsed();
                raw.reset();
                took
            })
        });
    }
    group.finish();
}

fn drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let request = incompressible(size);
        let bytes = stored(&request);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut wal = WalBench::new(&format!("drain-wal-{size}"), false);
        group.bench_function(BenchmarkId::new("wal", size), |b| {
            b.iter_custom(|iters| {
                for _ in 0..iters {
                    wal.append(&request);
                }
                let start = Instant::now();
                assert_eq!(wal.drain_all(), iters);
                start.elapsed()
            })
        });
        let mut raw = RawLog::new(&format!("drain-raw-{size}"));
        let mut buf = Vec::new();
        group.bench_function(BenchmarkId::new("raw", size), |b| {
            b.iter_custom(|iters| {
                raw.reset();
                for _ in 0..iters {
                    raw.append(&bytes);
                }
                let start = Instant::now();
                for _ in 0..iters {
                    raw.drain_one(&mut buf);
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// CPU part of an append (protobuf encode + snappy + CRC), to split WAL cost into CPU and IO.
fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for size in SIZES {
        let request = incompressible(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(
            BenchmarkId::new("encode_snappy_crc_incompressible", size),
            |b| {
                b.iter(|| {
                    let bytes = stored(&request);
                    std::hint::black_box(crc32fast::hash(&bytes))
                })
            },
        );
        let encoded = prompb_window(size).encode_to_vec();
        group.bench_function(BenchmarkId::new("snappy_crc_prompb", size), |b| {
            b.iter(|| {
                let bytes = snap::raw::Encoder::new().compress_vec(&encoded).unwrap();
                std::hint::black_box(crc32fast::hash(&bytes))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode, append, drain);
criterion_main!(benches);
