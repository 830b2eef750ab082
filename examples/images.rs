//! The real-world case: an expensive transformation (gaussian blur, resize to half, grayscale)
//! applied to every image of a directory, in parallel with an `mp::Pool`, against the same
//! work done serially in this process.
//!
//! ```text
//! cargo run --release --example images                              # generates 24 test images
//! cargo run --release --example images -- <input_dir> [output_dir]  # your own .png/.jpg files
//! ```
//!
//! It prints the serial and the parallel time, the speedup, and the pool's stats. A file that
//! cannot be decoded comes back as that file's `Err` and the rest are processed; a decoder that
//! panics is an `mp::Error::Panic` for that one file, and one that crashes its process (a
//! segfault in C code, say) an `mp::Error::WorkerDied`: the pool replaces the worker and goes on.
//! Set `MP_PROCESSES` to choose the number of workers (default: the number of CPUs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::imageops::{self, FilterType};
use image::{ImageReader, Rgb, RgbImage};
use mp::prelude::*;
use serde::{Deserialize, Serialize};

/// How strongly each image is blurred: the bulk of the work.
const SIGMA: f32 = 6.0;
/// The generated test set: count and size.
const TEST_IMAGES: u32 = 24;
const TEST_SIZE: (u32, u32) = (1024, 768);

/// What a worker sends back for one image (arguments and results are owned serde types).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ImageReport {
    /// The input's file name.
    file: String,
    /// Width and height in, and out.
    input: (u32, u32),
    output: (u32, u32),
    /// Size of the written PNG.
    bytes_written: u64,
    /// Time spent on this image, and in which process.
    millis: f64,
    pid: u32,
}

/// Decodes `path`, blurs, halves and grays it, and writes `<file name>.gray.png` to `out_dir`.
/// A file that is not a readable image is an `Err` for that file only.
#[mp::worker]
fn process_image(path: String, out_dir: String) -> Result<ImageReport, String> {
    let start = Instant::now();
    let file = file_name(Path::new(&path));
    let img = ImageReader::open(&path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("{file}: {e}"))?
        .decode()
        .map_err(|e| format!("{file}: {e}"))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let blurred = imageops::blur(&img, SIGMA);
    let small = imageops::resize(&blurred, (w / 2).max(1), (h / 2).max(1), FilterType::Lanczos3);
    let gray = imageops::grayscale(&small);
    let out = Path::new(&out_dir).join(format!("{file}.gray.png"));
    gray.save(&out).map_err(|e| format!("{file}: writing {}: {e}", out.display()))?;
    let bytes_written = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    Ok(ImageReport {
        file,
        input: (w, h),
        output: gray.dimensions(),
        bytes_written,
        millis: start.elapsed().as_secs_f64() * 1e3,
        pid: std::process::id(),
    })
}

/// Draws test image `index` (an interference pattern with some noise) and writes it to
/// `path`, as PNG or JPEG by its extension.
#[mp::worker]
fn generate_image(index: u32, path: String) -> Result<(), String> {
    let (w, h) = TEST_SIZE;
    let f = 0.004 + 0.001 * index as f32;
    let (cx, cy) = ((index * 97 % w) as f32, (index * 61 % h) as f32);
    let mut seed = 0x9E37_79B9_u32.wrapping_mul(index + 1);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let r = ((fx - cx).hypot(fy - cy) * f * 6.0).sin();
        let s = ((fx * f * 3.0).sin() + (fy * f * 2.0).cos()) * 0.5;
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let noise = (seed % 32) as f32 - 16.0;
        let c = |v: f32| (127.5 + 110.0 * v + noise).clamp(0.0, 255.0) as u8;
        Rgb([c(r), c(s), c(r * s)])
    });
    img.save(&path).map_err(|e| format!("{path}: {e}"))
}

#[mp::main]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let work = std::env::temp_dir().join("mp-images-example");
    let (input, output) = match args.as_slice() {
        [] => (work.join("input"), work.join("output")),
        [input] => (PathBuf::from(input), work.join("output")),
        [input, output] => (PathBuf::from(input), PathBuf::from(output)),
        _ => return Err("usage: images [<input_dir> [output_dir]]".into()),
    };
    if args.is_empty() {
        // The test set is drawn in parallel too: `par_map` on mp's default pool.
        let start = Instant::now();
        std::fs::create_dir_all(&input)?;
        let jobs = (0..TEST_IMAGES).map(|i| {
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            (i, input.join(format!("test-{i:02}.{ext}")).display().to_string())
        });
        for r in generate_image.par_map(jobs)? {
            r?;
        }
        println!(
            "generated {TEST_IMAGES} test images ({}x{}, PNG and JPEG) in {} in {:.2?}",
            TEST_SIZE.0,
            TEST_SIZE.1,
            input.display(),
            start.elapsed()
        );
    }
    std::fs::create_dir_all(&output)?;
    let files = list_images(&input)?;
    if files.is_empty() {
        return Err(format!("no .png/.jpg/.jpeg files in {}", input.display()).into());
    }
    let out_dir = output.display().to_string();
    let jobs: Vec<(String, String)> =
        files.iter().map(|p| (p.display().to_string(), out_dir.clone())).collect();
    println!(
        "{} images from {} -> {} (blur sigma {SIGMA}, resize 1/2, grayscale)\n",
        files.len(),
        input.display(),
        output.display()
    );

    // Serial: the worker is still a plain function. A panicking decoder would end the whole
    // program here, so catch it to keep the comparison going.
    let start = Instant::now();
    let serial: Vec<Option<ImageReport>> = jobs
        .iter()
        .map(|(path, out)| {
            let r = std::panic::catch_unwind(|| process_image(path.clone(), out.clone()));
            r.ok().and_then(Result::ok)
        })
        .collect();
    let serial_time = start.elapsed();
    println!("serial:   {serial_time:>10.2?}  (in this process)");

    // Parallel: one task per image (chunks of 1 balance uneven images best), results in
    // input order, every file's outcome reported on its own.
    let pool = mp::Pool::builder()
        .task_timeout(Duration::from_secs(120)) // a hung decoder is killed, not waited for
        .build()?;
    let start = Instant::now();
    let parallel: Vec<Result<Result<ImageReport, String>, mp::Error>> =
        pool.imap_chunked(process_image, jobs, 1)?.collect();
    let parallel_time = start.elapsed();
    println!("parallel: {parallel_time:>10.2?}  ({} worker processes)", pool.processes());
    println!("speedup:  {:>9.2}x\n", serial_time.as_secs_f64() / parallel_time.as_secs_f64());

    let mut failed = 0;
    for ((result, serial), path) in parallel.iter().zip(&serial).zip(&files) {
        match result {
            Ok(Ok(r)) => {
                println!(
                    "  ok    {:<24} {:>4}x{:<4} -> {:>4}x{:<4} {:>8} bytes {:>7.1} ms  pid {}",
                    r.file, r.input.0, r.input.1, r.output.0, r.output.1, r.bytes_written, r.millis, r.pid
                );
                // Same input, same code: the same output, serially or not.
                let same = serial.as_ref().is_some_and(|s| {
                    (s.input, s.output, s.bytes_written) == (r.input, r.output, r.bytes_written)
                });
                if !same {
                    println!("        (the serial run's result for {} differs: {serial:?})", r.file);
                }
            }
            // The worker returned an error: this file is unreadable.
            Ok(Err(message)) => {
                failed += 1;
                println!("  error {message}");
            }
            // The worker panicked on this file (the process survives it)...
            Err(mp::Error::Panic { message, location, .. }) => {
                failed += 1;
                let at = location.as_deref().unwrap_or("?");
                println!("  panic {}: {message} (at {at})", file_name(path));
            }
            // ...or its process died (segfault, abort, OOM kill) or hit the task timeout: a
            // fresh worker took its place and the other files went on.
            Err(e @ (mp::Error::WorkerDied { .. } | mp::Error::Timeout { .. })) => {
                failed += 1;
                println!("  crash {}: {e}", file_name(path));
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
    println!(
        "\n{} of {} images written to {}; {failed} failed",
        files.len() - failed,
        files.len(),
        output.display()
    );

    // A worker that returned `Err` completed its task: `tasks_failed` counts panics, crashes
    // and timeouts.
    let stats = pool.stats();
    println!(
        "\npool stats: {} tasks completed, {} failed, {} workers respawned",
        stats.tasks_completed, stats.tasks_failed, stats.workers_respawned
    );
    for w in &stats.workers {
        println!(
            "  worker pid {:>7}: {:>3} tasks, busy {:.2?} ({:.0}% of the parallel run)",
            w.pid,
            w.tasks,
            w.busy,
            100.0 * w.busy.as_secs_f64() / parallel_time.as_secs_f64()
        );
    }
    pool.close();
    pool.join()?;
    Ok(())
}

/// The `.png`, `.jpg` and `.jpeg` files of `dir`, sorted by name, but not this example's own
/// `.gray.png` outputs (when the output directory is the input directory).
fn list_images(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let output = file_name(&path).ends_with(".gray.png");
        if path.is_file() && !output && matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
