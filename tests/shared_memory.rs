//! `mp::Array<T>`, `mp::RawArray<T>` and `mp::SharedMemory`: locked arrays raced by several
//! processes, named blocks seen across processes and passed as arguments, the errors, and
//! the resource tracker removing the block of a creator that was SIGKILLed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{StartLine, Starter};
use mp::{Array, Connection, Pipe, Process, RawArray, SharedMemory};

/// A block name unique to this test process and `tag`, prefixed `mp-test-`.
fn name(tag: &str) -> String {
    format!("mp-test-{}-{tag}", std::process::id())
}

fn exists(name: &str) -> bool {
    Path::new("/dev/shm").join(name).exists()
}

/// Waits up to `within` for block `name` to disappear from /dev/shm.
fn wait_removed(name: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if !exists(name) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !exists(name)
}

fn io_kind(e: &mp::Error) -> Option<std::io::ErrorKind> {
    match e {
        mp::Error::Io { source, .. } => Some(source.kind()),
        _ => None,
    }
}

#[mp::worker]
fn add_to_every_element(array: Array<i32>, n: u32, line: StartLine) {
    line.wait();
    for _ in 0..n {
        array.with_lock(|xs| xs.iter_mut().for_each(|x| *x += 1)).unwrap();
    }
}

#[mp::worker]
fn add_with_guard_and_get_lock(array: Array<u64>, n: u32, line: StartLine) {
    line.wait();
    for i in 0..n {
        if i % 2 == 0 {
            let mut xs = array.lock().unwrap();
            xs.iter_mut().for_each(|x| *x += 1);
        } else {
            let _guard = array.get_lock().lock().unwrap();
            for j in 0..array.len() {
                array.set(j, array.get(j).unwrap() + 1).unwrap();
            }
        }
    }
}

#[mp::worker]
fn fill_squares(out: RawArray<u64>, start: usize, end: usize) {
    for i in start..end {
        out.set(i, (i * i) as u64).unwrap();
    }
}

#[mp::worker]
fn sum_through_connection(conn: Connection<Array<f64>>) -> f64 {
    let a = conn.recv().unwrap();
    let sum = a.to_vec().iter().sum();
    a.set(0, -1.0).unwrap();
    sum
}

#[mp::worker]
fn out_of_range_in_child(a: Array<u8>) -> (bool, bool) {
    (a.get(a.len()).is_err(), a.set(usize::MAX, 1).is_err())
}

/// Attaches by name, returns what the parent wrote, and writes a reply after it.
#[mp::worker]
fn attach_and_reply(name: String) -> Vec<u8> {
    let shm = SharedMemory::attach(&name).unwrap();
    let mut seen = vec![0u8; 5];
    shm.read_at(0, &mut seen).unwrap();
    shm.write_at(5, b" world").unwrap();
    seen
}

/// Uses a handle received as an argument: sums its bytes and doubles each.
#[mp::worker]
fn double_bytes(shm: SharedMemory) -> (String, usize, u64) {
    let mut buf = vec![0u8; shm.size()];
    shm.read_at(0, &mut buf).unwrap();
    let sum = buf.iter().map(|&b| u64::from(b)).sum();
    let doubled: Vec<u8> = buf.iter().map(|b| b.wrapping_mul(2)).collect();
    shm.write_at(0, &doubled).unwrap();
    (shm.name().to_string(), shm.size(), sum)
}

/// Creates a block, fills it, says so, and sleeps until killed.
#[mp::worker]
fn create_and_wait_to_die(name: String, ready: Connection<()>) {
    let shm = SharedMemory::create(&name, 1 << 16).unwrap();
    shm.write_at(0, &[1; 100]).unwrap();
    ready.send(()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Creates a block, says so, waits for the go, and returns without unlinking it.
#[mp::worker]
fn create_and_leave(name: String, conn: Connection<()>) {
    let shm = SharedMemory::create(&name, 100).unwrap();
    shm.write_at(0, b"left behind").unwrap();
    conn.send(()).unwrap();
    conn.recv().unwrap();
}

/// Starts `n` workers made by `make`, starts them at the same moment, and joins them.
fn race<W: mp::Worker<Output = ()>>(n: usize, make: impl Fn(StartLine) -> Process<W>) {
    let (starter, lines) = Starter::new(n);
    let mut workers: Vec<_> = lines.into_iter().map(make).collect();
    for p in &mut workers {
        p.start().unwrap();
    }
    starter.go();
    for p in &mut workers {
        p.join().unwrap();
    }
}

#[mp::test]
fn smoke() {
    let a: Array<i32> = Array::new(3).unwrap();
    assert_eq!((a.len(), a.is_empty()), (3, false));
    a.set(1, 5).unwrap();
    assert_eq!(a.get(1).unwrap(), 5);
    assert_eq!(a.to_vec(), [0, 5, 0]);
    assert_eq!(a.with_lock(|xs| xs.iter().sum::<i32>()).unwrap(), 5);
    {
        let mut g = a.lock().unwrap();
        g[0] = 7;
        assert!(!g.previous_owner_died());
        assert!(a.get_lock().try_lock().unwrap().is_none(), "the guard holds the array's lock");
    }
    assert_eq!(format!("{a:?}"), "Array([7, 5, 0])");

    let raw = RawArray::new(vec![1u8, 2]).unwrap();
    raw.clone().set(0, 9).unwrap();
    assert_eq!(raw.to_vec(), [9, 2], "a clone is the same shared array");

    let shm = SharedMemory::create(&name("smoke"), 64).unwrap();
    shm.write_at(0, b"hi").unwrap();
    let other = SharedMemory::attach(shm.name()).unwrap();
    let mut buf = [0u8; 2];
    other.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    assert_eq!(other.size(), 64);
    shm.unlink().unwrap();
    assert!(!exists(shm.name()));
}

#[mp::test]
fn array_2000_in_each_of_4_elements() {
    // The "Array [2000; 4]": 2 processes x 1000 locked increments of every element.
    let array: Array<i32> = Array::new(4).unwrap();
    race(2, |line| Process::new(add_to_every_element, (array.clone(), 1000, line)));
    assert_eq!(array.to_vec(), [2000; 4]);
}

#[mp::test]
fn array_of_2000_raced_by_4_processes_x_1000() {
    let array: Array<i32> = Array::new(2000).unwrap();
    race(4, |line| Process::new(add_to_every_element, (array.clone(), 1000, line)));
    let v = array.to_vec();
    assert_eq!(v.len(), 2000);
    assert!(v.iter().all(|&x| x == 4000), "lost updates: {:?}", v.iter().find(|&&x| x != 4000));
}

#[mp::test]
fn array_guard_and_get_lock_from_processes() {
    let array = Array::new(vec![10u64; 50]).unwrap();
    race(3, |line| Process::new(add_with_guard_and_get_lock, (array.clone(), 500, line)));
    assert_eq!(array.to_vec(), vec![1510; 50]);
}

#[mp::test]
fn raw_array_filled_by_two_workers() {
    let out: RawArray<u64> = RawArray::new(1000).unwrap();
    let mut a = Process::new(fill_squares, (out.clone(), 0, 500));
    let mut b = Process::new(fill_squares, (out.clone(), 500, 1000));
    a.start().unwrap();
    b.start().unwrap();
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(out.to_vec(), (0..1000u64).map(|i| i * i).collect::<Vec<_>>());
}

#[mp::test]
fn array_through_a_connection() {
    let a = Array::new([1.5f64, 2.5, 3.0]).unwrap();
    let (ours, theirs) = Pipe::new::<Array<f64>>().unwrap();
    let mut p = Process::new(sum_through_connection, theirs);
    p.start().unwrap();
    ours.send(a.clone()).unwrap();
    assert_eq!(p.join().unwrap(), 7.0);
    assert_eq!(a.to_vec(), [-1.0, 2.5, 3.0]);
}

#[mp::test]
fn array_get_set_len_and_out_of_range() {
    let a = Array::new(&[1u8, 2, 3][..]).unwrap();
    assert_eq!(a.len(), 3);
    for bad in [3, 4, usize::MAX] {
        let e = a.get(bad).unwrap_err();
        assert!(matches!(e, mp::Error::Invalid(_)), "{e:?}");
        assert!(e.to_string().contains(&format!("index {bad} is out of range")), "{e}");
        assert!(a.set(bad, 0).is_err());
    }
    assert_eq!(a.to_vec(), [1, 2, 3], "a refused set changes nothing");
    let empty: Array<u8> = Array::new(0).unwrap();
    assert!(empty.is_empty());
    assert!(empty.get(0).is_err());
    assert_eq!(empty.with_lock(|xs| xs.len()).unwrap(), 0);
    let raw = RawArray::new([[1u16, 2], [3, 4]]).unwrap();
    assert_eq!(raw.get(1).unwrap(), [3, 4]);
    assert!(raw.get(2).is_err() && raw.set(2, [0, 0]).is_err());

    let mut p = Process::new(out_of_range_in_child, a.clone());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (true, true));
}

#[mp::test]
fn shared_memory_seen_across_processes() {
    let shm = SharedMemory::create(&name("across"), 4096).unwrap();
    shm.write_at(0, b"hello").unwrap();
    let mut p = Process::new(attach_and_reply, shm.name().to_string());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), b"hello");
    let mut buf = [0u8; 11];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello world");
    shm.unlink().unwrap();
}

#[mp::test]
fn shared_memory_passed_as_a_worker_argument() {
    let shm = SharedMemory::create(&name("argument"), 100).unwrap();
    let bytes: Vec<u8> = (0..100).collect();
    shm.write_at(0, &bytes).unwrap();
    let mut p = Process::new(double_bytes, shm.clone());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (shm.name().to_string(), 100, (0..100).sum()));
    let mut after = vec![0u8; 100];
    shm.read_at(0, &mut after).unwrap();
    assert_eq!(after, bytes.iter().map(|b| b * 2).collect::<Vec<_>>());
    shm.unlink().unwrap();
    // A handle still works after the name is gone, in this process and passed to another.
    let mut p = Process::new(double_bytes, shm.clone());
    p.start().unwrap();
    assert_eq!(p.join().unwrap().1, 100);
}

#[mp::test]
fn shared_memory_errors() {
    let n = name("errors");
    let shm = SharedMemory::create(&n, 10).unwrap();
    let e = SharedMemory::create(&n, 10).unwrap_err();
    assert_eq!(io_kind(&e), Some(std::io::ErrorKind::AlreadyExists), "{e:?}");
    assert!(e.to_string().contains(&n) && e.to_string().contains("attach"), "{e}");
    shm.unlink().unwrap();

    let e = SharedMemory::attach(&n).unwrap_err();
    assert_eq!(io_kind(&e), Some(std::io::ErrorKind::NotFound), "{e:?}");
    assert!(e.to_string().contains(&n), "{e}");
    assert_eq!(io_kind(&shm.unlink().unwrap_err()), Some(std::io::ErrorKind::NotFound));

    let e = SharedMemory::create(&name("zero"), 0).unwrap_err();
    assert!(matches!(&e, mp::Error::Invalid(m) if m.contains("size 0")), "{e:?}");
    assert!(!exists(&name("zero")));
    let long = format!("mp-test-{}", "x".repeat(300));
    for bad in ["", "a\0b", "a/b", "/lead", ".", "..", long.as_str()] {
        let e = SharedMemory::create(bad, 10).unwrap_err();
        assert!(matches!(e, mp::Error::Invalid(_)), "{bad:?}: {e:?}");
        assert!(matches!(SharedMemory::attach(bad), Err(mp::Error::Invalid(_))), "{bad:?}");
    }
    let e = SharedMemory::create(&long, 1).unwrap_err().to_string();
    assert!(e.contains("at most 255"), "{e}");

    let shm = SharedMemory::create(&n, 8).unwrap();
    let mut buf = [0u8; 4];
    assert!(matches!(shm.read_at(5, &mut buf), Err(mp::Error::Invalid(_))));
    assert!(matches!(shm.write_at(usize::MAX, &buf), Err(mp::Error::Invalid(_))));
    assert!(shm.read_at(4, &mut buf).is_ok() && shm.write_at(8, &[]).is_ok());
    shm.unlink().unwrap();
}

#[mp::test]
fn creator_sigkilled_leaves_no_block() {
    let n = name("sigkilled");
    let (ready_rx, ready_tx) = Pipe::new::<()>().unwrap();
    let mut p = Process::new(create_and_wait_to_die, (n.clone(), ready_tx)).daemon(true);
    p.start().unwrap();
    ready_rx.recv().unwrap();
    assert!(exists(&n), "the child created the block");
    p.kill().unwrap();
    let killed = Instant::now();
    assert!(matches!(p.join(), Err(mp::Error::WorkerDied { .. })));
    assert!(wait_removed(&n, Duration::from_secs(3)), "block {n} is still in /dev/shm");
    eprintln!("removed {:?} after the SIGKILL", killed.elapsed());
}

#[mp::test]
fn block_left_by_its_creator_stays_while_mapped_then_goes() {
    let n = name("left");
    let (ours, theirs) = Pipe::new::<()>().unwrap();
    let mut p = Process::new(create_and_leave, (n.clone(), theirs));
    p.start().unwrap();
    ours.recv().unwrap();
    let shm = SharedMemory::attach(&n).unwrap();
    ours.send(()).unwrap();
    p.join().unwrap(); // the creator is gone, without unlinking
    let mut buf = [0u8; 11];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"left behind");
    std::thread::sleep(Duration::from_millis(400));
    assert!(exists(&n), "the tracker must wait while this process maps the block");
    drop(shm);
    assert!(wait_removed(&n, Duration::from_secs(3)), "block {n} outlived its last user");
}
