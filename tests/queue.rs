//! `mp::Queue`, `JoinableQueue`, `SimpleQueue`: FIFO across processes, bounded Full/Empty,
//! task_done/join, many producers and consumers, messages from bytes to tens of MiB through a
//! small ring, handles that cannot be put, closed handles, and processes killed mid-put and
//! mid-get.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::wait_gone;
use mp::{Connection, Error, JoinableQueue, Lock, Pipe, Process, Queue, SimpleQueue};

#[mp::worker]
fn put_range(q: Queue<u32>, from: u32, to: u32) {
    for i in from..to {
        q.put(i).unwrap();
    }
}

#[mp::worker]
fn produce_tagged(q: Queue<(u32, u32)>, who: u32, n: u32) {
    for i in 0..n {
        q.put((who, i)).unwrap();
    }
}

/// Takes messages until it gets `None`, returns them in the order received.
#[mp::worker]
fn drain_until_none(q: Queue<Option<(u32, u32)>>) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    while let Some(m) = q.get_timeout(Duration::from_secs(30)).unwrap() {
        got.push(m);
    }
    got
}

#[mp::worker]
fn produce_some(q: Queue<Option<(u32, u32)>>, who: u32, n: u32) {
    for i in 0..n {
        q.put(Some((who, i))).unwrap();
    }
}

#[mp::worker]
fn consume_and_mark(q: JoinableQueue<u32>, n: u32) -> u64 {
    let mut sum = 0;
    for _ in 0..n {
        sum += u64::from(q.get().unwrap());
        q.task_done().unwrap();
    }
    sum
}

#[mp::worker]
fn echo_bytes(inq: Queue<Vec<u8>>, outq: Queue<Vec<u8>>, n: usize) {
    for _ in 0..n {
        outq.put(inq.get().unwrap()).unwrap();
    }
}

#[mp::worker]
fn put_big(q: Queue<Vec<u64>>, len: usize) {
    q.put((0..len as u64).collect()).unwrap();
}

/// Puts a message far bigger than the ring with nobody reading: stuck mid-stream until killed.
#[mp::worker]
fn put_huge_and_hang(q: Queue<Vec<u8>>, ready: Connection<u32>) {
    ready.send(std::process::id()).unwrap();
    let _ = q.put(vec![7u8; 64 << 20]);
}

/// Blocks in `get` (holding the consumers' lock) until killed.
#[mp::worker]
fn get_and_hang(q: Queue<u32>, ready: Connection<u32>) {
    ready.send(std::process::id()).unwrap();
    let _ = q.get();
}

#[mp::worker]
fn simple_echo(q: SimpleQueue<String>, back: SimpleQueue<String>) {
    let s = q.get().unwrap();
    back.put(s.to_uppercase()).unwrap();
}

#[mp::test]
fn smoke() {
    let q = Queue::new().unwrap();
    q.put("a".to_string()).unwrap();
    q.put("b".to_string()).unwrap();
    assert_eq!(q.qsize().unwrap(), 2);
    assert_eq!(q.get().unwrap(), "a");
    assert_eq!(q.get().unwrap(), "b");
    assert!(q.empty().unwrap());
    assert!(matches!(q.try_get(), Err(Error::Empty)));
}

#[mp::test]
fn fifo_across_processes() {
    let q = Queue::new().unwrap();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    let mut p = Process::new(put_range, (q.clone(), 10, 20));
    p.start().unwrap();
    p.join().unwrap();
    let got: Vec<u32> = (0..20).map(|_| q.get_timeout(Duration::from_secs(10)).unwrap()).collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(q.empty().unwrap());
}

#[mp::test]
fn bounded_full_and_empty_with_timeouts() {
    let q = Queue::bounded(2).unwrap();
    assert_eq!(q.maxsize(), Some(2));
    q.put(1u8).unwrap();
    q.try_put(2).unwrap();
    assert!(q.full().unwrap());
    let e = q.put_timeout(3, Duration::from_millis(50)).unwrap_err();
    assert!(matches!(e.error, Error::Full), "{e}");
    assert_eq!(e.into_inner(), 3, "the value comes back");
    let e = q.try_put(4).unwrap_err();
    assert!(matches!(e.error, Error::Full));
    assert_eq!(q.qsize().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 1);
    q.put_timeout(5, Duration::from_millis(50)).unwrap();
    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 5);
    assert!(matches!(q.get_timeout(Duration::from_millis(50)), Err(Error::Empty)));
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert!(matches!(Queue::<u8>::bounded(0), Err(Error::Invalid(_))));
}

#[mp::test]
fn a_bounded_put_waits_for_a_consumer_in_another_process() {
    let q = Queue::bounded(3).unwrap();
    let mut p = Process::new(put_range, (q.clone(), 0, 500));
    p.start().unwrap();
    let got: Vec<u32> = (0..500).map(|_| q.get_timeout(Duration::from_secs(10)).unwrap()).collect();
    p.join().unwrap();
    assert_eq!(got, (0..500).collect::<Vec<_>>());
}

#[mp::test]
fn many_producers_many_consumers_lose_nothing_and_keep_each_producers_order() {
    let q: Queue<Option<(u32, u32)>> = Queue::builder().buffer_size(64 << 10).build().unwrap();
    let (producers, consumers, n) = (3u32, 2, 2000u32);
    let mut ps: Vec<_> = (0..producers).map(|w| Process::new(produce_some, (q.clone(), w, n))).collect();
    let mut cs: Vec<_> = (0..consumers).map(|_| Process::new(drain_until_none, q.clone())).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for c in &mut cs {
        c.start().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
    }
    for _ in 0..consumers {
        q.put(None).unwrap();
    }
    let mut all: HashMap<u32, Vec<u32>> = HashMap::new();
    for c in &mut cs {
        let got = c.join().unwrap();
        // Within one consumer, each producer's items arrive in order.
        let mut last: HashMap<u32, u32> = HashMap::new();
        for &(w, i) in &got {
            if let Some(&prev) = last.get(&w) {
                assert!(i > prev, "producer {w}: {i} after {prev}");
            }
            last.insert(w, i);
            all.entry(w).or_default().push(i);
        }
    }
    for w in 0..producers {
        let mut items = all.remove(&w).unwrap_or_default();
        items.sort_unstable();
        assert_eq!(items, (0..n).collect::<Vec<_>>(), "producer {w}: every item exactly once");
    }
}

#[mp::test]
fn tagged_items_from_two_processes_interleave_but_stay_in_order() {
    let q = Queue::new().unwrap();
    let mut a = Process::new(produce_tagged, (q.clone(), 1, 300));
    let mut b = Process::new(produce_tagged, (q.clone(), 2, 300));
    a.start().unwrap();
    b.start().unwrap();
    let mut next = [0u32; 3];
    for _ in 0..600 {
        let (who, i) = q.get_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(i, next[who as usize]);
        next[who as usize] += 1;
    }
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(next, [0, 300, 300]);
}

#[mp::test]
fn joinable_queue_join_returns_after_exactly_n_task_done() {
    let q = JoinableQueue::new().unwrap();
    for i in 1..=10u32 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished_tasks().unwrap(), 10);
    // A consumer that marks only 9 of them: join must not return.
    let mut p = Process::new(consume_and_mark, (q.clone(), 9));
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 45);
    assert!(matches!(q.join_timeout(Duration::from_millis(100)), Err(Error::Timeout { .. })));
    assert_eq!(q.unfinished_tasks().unwrap(), 1);
    let mut p = Process::new(consume_and_mark, (q.clone(), 1));
    p.start().unwrap();
    q.join_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(p.join().unwrap(), 10);
    assert!(matches!(q.task_done(), Err(Error::Invalid(_))), "one task_done too many");
    assert_eq!(q.unfinished_tasks().unwrap(), 0);
}

#[mp::test]
fn byte_messages_of_every_size_round_trip_through_a_small_ring() {
    let small = || Queue::<Vec<u8>>::builder().buffer_size(64 << 10).build().unwrap();
    let (to, from) = (small(), small());
    let sizes = [0usize, 1, 7, 8, 9, 100, 4095, 16 << 10, 70_000, 1 << 20, (3 << 20) + 5, 20 << 20];
    let mut p = Process::new(echo_bytes, (to.clone(), from.clone(), sizes.len()));
    p.start().unwrap();
    let sender = {
        let to = to.clone();
        std::thread::spawn(move || {
            for (k, &n) in sizes.iter().enumerate() {
                to.put((0..n).map(|i| (i * 31 + k) as u8).collect()).unwrap();
            }
        })
    };
    for (k, &n) in sizes.iter().enumerate() {
        let got = from.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(got.len(), n);
        assert!(
            got.iter().enumerate().all(|(i, &b)| b == (i * 31 + k) as u8),
            "message {k} ({n} bytes) intact"
        );
    }
    sender.join().unwrap();
    p.join().unwrap();
}

#[mp::test]
fn a_large_typed_message_streams_through_the_ring() {
    let q = Queue::builder().buffer_size(1 << 20).build().unwrap();
    let len = 3_000_000;
    let mut p = Process::new(put_big, (q.clone(), len));
    p.start().unwrap();
    let v: Vec<u64> = q.get_timeout(Duration::from_secs(30)).unwrap();
    p.join().unwrap();
    assert_eq!(v.len(), len);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
}

#[mp::test]
fn simple_queue_round_trip_through_a_child() {
    let (q, back) = (SimpleQueue::new().unwrap(), SimpleQueue::new().unwrap());
    assert!(q.empty().unwrap());
    let mut p = Process::new(simple_echo, (q.clone(), back.clone()));
    p.start().unwrap();
    q.put("hello".to_string()).unwrap();
    assert_eq!(back.get_timeout(Duration::from_secs(10)).unwrap(), "HELLO");
    p.join().unwrap();
}

#[mp::test]
fn a_queue_travels_through_a_connection() {
    let q = Queue::new().unwrap();
    let (a, b) = Pipe::new::<Queue<String>>().unwrap();
    a.send(q.clone()).unwrap();
    let received = b.recv().unwrap();
    received.put("via pipe".into()).unwrap();
    assert_eq!(q.get().unwrap(), "via pipe");
}

#[mp::test]
fn handles_cannot_be_put_and_come_back() {
    let q: Queue<Lock> = Queue::new().unwrap();
    let e = q.put(Lock::new().unwrap()).unwrap_err();
    match &e.error {
        Error::Codec { message, .. } => assert!(message.contains("worker argument"), "{message}"),
        other => panic!("expected a codec error, got {other}"),
    }
    drop(e.into_inner().lock().unwrap());
    assert!(q.empty().unwrap(), "nothing was put");
}

#[mp::test]
fn closed_handles_refuse_and_other_handles_carry_on() {
    let mut q = Queue::new().unwrap();
    let other = q.clone();
    q.put(1).unwrap();
    q.close();
    assert!(q.is_closed());
    assert!(matches!(q.put(2).unwrap_err().error, Error::Closed { .. }));
    assert!(matches!(q.get(), Err(Error::Closed { .. })));
    assert!(matches!(q.qsize(), Err(Error::Closed { .. })));
    assert_eq!(other.get().unwrap(), 1);
    let (a, _b) = Pipe::new::<Queue<i32>>().unwrap();
    assert!(a.send(q).is_err(), "a closed handle cannot be sent");
}

/// In its own process (the limit is process-wide): (refused as a Codec error, bytes handed
/// back, queue still empty).
#[mp::worker]
fn put_over_the_limit(q: Queue<Vec<u8>>) -> (bool, usize, bool) {
    mp::set_max_frame_size(1 << 20);
    let e = q.put(vec![0; 2 << 20]).unwrap_err();
    (matches!(e.error, Error::Codec { .. }), e.into_inner().len(), q.empty().unwrap())
}

#[mp::test]
fn an_oversized_message_is_refused_before_anything_is_put() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    let mut p = Process::new(put_over_the_limit, q.clone());
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), (true, 2 << 20, true));
    assert!(q.empty().unwrap());
}

/// A small queue whose producer was SIGKILLed after its huge message had started (its first
/// fragment counts) and filled the ring.
fn queue_with_a_dead_producer_mid_message() -> Queue<Vec<u8>> {
    let q = Queue::<Vec<u8>>::builder().buffer_size(64 << 10).build().unwrap();
    let (ready, theirs) = Pipe::new::<u32>().unwrap();
    let mut p = Process::new(put_huge_and_hang, (q.clone(), theirs));
    p.start().unwrap();
    let pid = ready.recv().unwrap();
    while q.qsize().unwrap() == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    p.kill().unwrap();
    assert!(wait_gone(pid, Duration::from_secs(5)));
    q
}

#[mp::test]
fn a_producer_killed_mid_message_leaves_no_half_message() {
    let q = queue_with_a_dead_producer_mid_message();
    // With no other producer, the consumer notices the dead one and drops the partial message.
    assert!(matches!(q.get_timeout(Duration::from_millis(300)), Err(Error::Empty)));
    q.put(b"after".to_vec()).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), b"after");
    assert!(q.empty().unwrap());
}

#[mp::test]
fn a_producer_killed_mid_message_is_cleaned_up_by_the_next_producer() {
    let q = queue_with_a_dead_producer_mid_message();
    // This put takes the producers' lock over from the dead one (which left a full ring): a
    // consumer thread drains the partial message meanwhile.
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || q.get_timeout(Duration::from_secs(10)))
    };
    q.put(b"next".to_vec()).unwrap();
    assert_eq!(consumer.join().unwrap().unwrap(), b"next");
}

#[mp::test]
fn a_consumer_killed_while_waiting_does_not_block_the_next() {
    let q = Queue::new().unwrap();
    let (ready, theirs) = Pipe::new::<u32>().unwrap();
    let mut p = Process::new(get_and_hang, (q.clone(), theirs));
    p.start().unwrap();
    let pid = ready.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let it block in get()
    p.kill().unwrap();
    assert!(wait_gone(pid, Duration::from_secs(5)));
    q.put(42).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 42);
}

#[mp::test]
fn a_thread_waiting_in_get_is_woken_by_a_put_from_another_process() {
    let q = Queue::new().unwrap();
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || q.get_timeout(Duration::from_secs(20)))
    };
    std::thread::sleep(Duration::from_millis(50)); // let it sleep on the futex
    let mut p = Process::new(put_range, (q.clone(), 5, 6));
    p.start().unwrap();
    p.join().unwrap();
    assert_eq!(getter.join().unwrap().unwrap(), 5);
}

#[mp::test]
fn bad_buffer_sizes_are_refused() {
    assert!(matches!(Queue::<u8>::builder().buffer_size(1).build(), Err(Error::Invalid(_))));
    assert!(matches!(Queue::<u8>::builder().buffer_size(usize::MAX).build(), Err(Error::Invalid(_))));
    let q = Queue::<u8>::builder().buffer_size(100_000).build().unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
}

/// (length, sum of the bytes) of one message.
#[mp::worker]
fn measure(q: Queue<Vec<u8>>) -> (usize, u64) {
    let v = q.get_timeout(Duration::from_secs(60)).unwrap();
    (v.len(), v.iter().map(|&b| u64::from(b)).sum())
}

#[mp::test]
fn a_message_of_hundreds_of_mib_passes() {
    let q = Queue::new().unwrap();
    let mut p = Process::new(measure, q.clone());
    p.start().unwrap();
    let len = 300 << 20;
    q.put((0..len).map(|i| (i % 251) as u8).collect()).unwrap();
    let expected: u64 = (0..len as u64).map(|i| i % 251).sum();
    assert_eq!(p.join().unwrap(), (len, expected));
}

/// Puts `n` messages of pseudo-random sizes (0..200 KiB, so many stream through a 64 KiB
/// ring), each filled from a seed the consumer can check: (producer, seq, bytes...).
#[mp::worker]
fn put_mixed(q: Queue<Option<(u32, u32, Vec<u8>)>>, who: u32, n: u32) {
    let mut x = 0x9E37_79B9u32 ^ who;
    for seq in 0..n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = (x % (200 << 10)) as usize;
        q.put(Some((who, seq, (0..len).map(|i| (i as u32 ^ seq ^ who) as u8).collect()))).unwrap();
    }
}

/// Takes messages until `None`, checking each one's bytes; returns (producer, seq) in order.
#[mp::worker]
fn check_mixed(q: Queue<Option<(u32, u32, Vec<u8>)>>) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    while let Some((who, seq, bytes)) = q.get_timeout(Duration::from_secs(60)).unwrap() {
        assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i as u32 ^ seq ^ who) as u8));
        got.push((who, seq));
    }
    got
}

#[mp::test]
fn mixed_sizes_from_several_producers_to_several_consumers_arrive_intact() {
    let q = Queue::builder().buffer_size(64 << 10).build().unwrap();
    let (producers, n) = (3u32, 150u32);
    let mut ps: Vec<_> = (0..producers).map(|w| Process::new(put_mixed, (q.clone(), w, n))).collect();
    let mut cs: Vec<_> = (0..2).map(|_| Process::new(check_mixed, q.clone())).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for c in &mut cs {
        c.start().unwrap();
    }
    for p in &mut ps {
        p.join().unwrap();
    }
    q.put(None).unwrap();
    q.put(None).unwrap();
    let mut seen: Vec<(u32, u32)> = Vec::new();
    for c in &mut cs {
        let got = c.join().unwrap();
        for w in 0..producers {
            let mine: Vec<u32> = got.iter().filter(|g| g.0 == w).map(|g| g.1).collect();
            assert!(mine.windows(2).all(|p| p[0] < p[1]), "producer {w}'s order kept");
        }
        seen.extend(got);
    }
    seen.sort_unstable();
    let want: Vec<(u32, u32)> = (0..producers).flat_map(|w| (0..n).map(move |s| (w, s))).collect();
    assert_eq!(seen, want);
}

#[mp::worker]
fn take_one_len(q: Queue<Vec<u8>>) -> usize {
    q.get().unwrap().len()
}

/// Puts a message much bigger than the ring, then a short one.
#[mp::worker]
fn put_big_then_tail(q: Queue<Vec<u8>>, ready: Connection<u32>) {
    ready.send(std::process::id()).unwrap();
    q.put(vec![1u8; 8 << 20]).unwrap();
    q.put(b"tail".to_vec()).unwrap();
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig).unwrap();
}

#[mp::test]
fn a_consumer_killed_mid_message_leaves_the_rest_to_be_skipped() {
    use rustix::process::Signal;
    let q = Queue::<Vec<u8>>::builder().buffer_size(64 << 10).build().unwrap();
    let (ready, theirs) = Pipe::new::<u32>().unwrap();
    let mut producer = Process::new(put_big_then_tail, (q.clone(), theirs));
    producer.start().unwrap();
    let producer_pid = ready.recv().unwrap();
    // The big message has started and fills the ring; freeze its producer there.
    while q.qsize().unwrap() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    signal(producer_pid, Signal::STOP);
    // A consumer takes its first fragments, then waits for the rest: kill it there.
    let mut consumer = Process::new(take_one_len, q.clone());
    consumer.start().unwrap();
    let consumer_pid = consumer.pid().unwrap();
    while q.qsize().unwrap() != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    consumer.kill().unwrap();
    assert!(wait_gone(consumer_pid, Duration::from_secs(5)));
    signal(producer_pid, Signal::CONT);
    // The next consumer takes the lock over, skips the rest of that message, and gets the next.
    assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), b"tail");
    producer.join().unwrap();
    assert!(q.empty().unwrap());
    assert!(matches!(consumer.join(), Err(Error::WorkerDied { .. })));
}
