//! `mp::Manager`: dict, list, queue, value, lock, event and namespace proxies used from
//! several processes; proxies nested in managed containers; a `#[mp::managed]` type with a
//! panicking and a private method; shutdown, owner death and bad frames.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{cpu_ticks, wait_gone};
use mp::{
    Connection, DictProxy, Error, EventProxy, ListProxy, LockProxy, Manager, NamespaceProxy, Pipe, Process,
    QueueProxy, ValueProxy,
};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Counter {
    n: i64,
}

#[mp::managed]
impl Counter {
    /// Adds `by`; returns the new count.
    pub fn incr(&mut self, by: i64) -> i64 {
        self.bump(by);
        self.n
    }

    pub fn get(&self) -> i64 {
        self.n
    }

    pub fn fail(&self, why: String) -> i64 {
        panic!("asked to fail: {why}")
    }

    /// Not exposed: the proxy has no `bump`.
    fn bump(&mut self, by: i64) {
        self.n += by;
    }

    /// An associated function: not exposed either.
    pub fn zero() -> Counter {
        Counter { n: 0 }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Other;

#[mp::managed]
impl Other {
    pub fn only_here(&self) -> u8 {
        1
    }
}

fn spawn_all<W: mp::Worker>(w: W, args: impl IntoIterator<Item = W::Args>) -> Vec<W::Output> {
    let mut ps: Vec<Process<W>> = args.into_iter().map(|a| Process::new(w, a)).collect();
    ps.iter_mut().for_each(|p| p.start().unwrap());
    ps.iter_mut().map(|p| p.join().unwrap()).collect()
}

#[mp::worker]
fn fill_dict(d: DictProxy<String, u32>, who: u32, n: u32) {
    for i in 0..n {
        d.insert(format!("{who}-{i}"), who * 1000 + i).unwrap();
    }
}

#[mp::worker]
fn push_items(l: ListProxy<u32>, who: u32, n: u32) {
    for i in 0..n {
        l.push(who * 1000 + i).unwrap();
    }
}

#[mp::worker]
fn produce(q: QueueProxy<String>, who: u32, n: u32) {
    for i in 0..n {
        q.put(format!("{who}:{i}")).unwrap();
    }
}

#[mp::worker]
fn add_under_lock(v: ValueProxy<i64>, lock: LockProxy, n: u32) {
    for _ in 0..n {
        let g = lock.lock().unwrap();
        let x = v.get().unwrap();
        v.set(x + 1).unwrap();
        g.unlock().unwrap();
    }
}

#[mp::worker]
fn wait_event(ev: EventProxy, ready: Connection<()>) -> bool {
    ready.send(()).unwrap();
    ev.wait_timeout(Duration::from_secs(20)).is_ok()
}

#[mp::worker]
fn set_fields(ns: NamespaceProxy) {
    ns.set("count", 3u64).unwrap();
    ns.set("label", "from a child").unwrap();
}

#[mp::worker]
fn incr_many(c: CounterProxy, n: u32) -> i64 {
    let mut last = 0;
    for _ in 0..n {
        last = c.incr(1).unwrap();
    }
    last
}

#[mp::worker]
fn push_through_dict(d: DictProxy<String, ListProxy<String>>) {
    let l = d.get("log").unwrap().expect("the list is in the dict");
    l.push("from a child".into()).unwrap();
}

/// The path of a default manager's Unix socket.
fn socket_path(m: &Manager) -> String {
    match m.address() {
        mp::Address::Unix(p) => p.display().to_string(),
        other => panic!("a default manager listens on a Unix socket, not {other}"),
    }
}

#[mp::worker]
fn own_a_manager(report: Connection<(u32, String)>) {
    let m = Manager::new().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    report.send((m.pid().unwrap(), socket_path(&m))).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts a manager, leaks it (no drop, no shutdown) and returns: the process exits.
#[mp::worker]
fn leak_a_manager() -> (u32, String) {
    let m = Manager::new().unwrap();
    let out = (m.pid().unwrap(), socket_path(&m));
    std::mem::forget(m);
    out
}

/// Forwards a list proxy through a queue without using it.
#[mp::worker]
fn forward(l: ListProxy<String>, q: QueueProxy<ListProxy<String>>) {
    q.put(l).unwrap();
}

#[mp::worker]
fn hold_lock_until_killed(lock: LockProxy, ready: Connection<()>) {
    let _g = lock.lock().unwrap();
    ready.send(()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[mp::worker]
fn is_set_or_error(ev: EventProxy) -> String {
    match ev.is_set() {
        Ok(set) => format!("answered {set}"),
        Err(e) => e.to_string(),
    }
}

#[mp::test]
fn smoke() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Manager>();
    send_sync::<DictProxy<String, Vec<u8>>>();
    send_sync::<CounterProxy>();
    let mut m = Manager::new().unwrap();
    let pid = m.pid().unwrap();
    let dir = std::path::Path::new(&socket_path(&m)).parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let d = m.dict::<String, i64>().unwrap();
    assert_eq!(d.insert("a".into(), 1).unwrap(), None);
    assert_eq!(d.insert("a".into(), 2).unwrap(), Some(1));
    assert_eq!(d.get("a").unwrap(), Some(2));
    assert_eq!(d.get("b").unwrap(), None);
    m.shutdown().unwrap();
    assert!(wait_gone(pid, Duration::from_secs(5)));
    assert!(!dir.exists(), "the socket directory is removed");
    assert!(matches!(d.get("a"), Err(Error::Disconnected { .. })));
    assert!(matches!(m.dict::<u8, u8>(), Err(Error::Closed { .. })));
}

#[mp::test]
fn dict_from_several_processes() {
    let m = Manager::new().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    spawn_all(fill_dict, (0..4).map(|w| (d.clone(), w, 50)));
    assert_eq!(d.len().unwrap(), 200);
    assert_eq!(d.get("3-49").unwrap(), Some(3049));
    assert!(d.contains_key("0-0").unwrap());
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys.len(), 200);
    let items = d.items().unwrap();
    assert!(items.iter().all(|(k, v)| d.get(k).unwrap() == Some(*v)));
    assert_eq!(
        d.values().unwrap().iter().map(|&v| u64::from(v)).sum::<u64>(),
        items.iter().map(|(_, v)| u64::from(*v)).sum::<u64>()
    );
    assert_eq!(d.remove("0-0").unwrap(), Some(0));
    d.update([("x".to_string(), 1), ("y".to_string(), 2)]).unwrap();
    assert_eq!(d.len().unwrap(), 201);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
}

#[mp::test]
fn list_from_several_processes() {
    let m = Manager::new().unwrap();
    let l = m.list::<u32>().unwrap();
    spawn_all(push_items, (0..3).map(|w| (l.clone(), w, 40)));
    let mut all = l.to_vec().unwrap();
    assert_eq!(all.len(), 120);
    all.sort();
    let mut want: Vec<u32> = (0..3).flat_map(|w| (0..40).map(move |i| w * 1000 + i)).collect();
    want.sort();
    assert_eq!(all, want);
    l.set(0, 7).unwrap();
    assert_eq!(l.get(0).unwrap(), Some(7));
    assert_eq!(l.get(1000).unwrap(), None);
    assert!(matches!(l.set(1000, 1), Err(Error::Invalid(m)) if m.contains("out of range")));
    l.extend([1, 2]).unwrap();
    assert_eq!(l.pop().unwrap(), Some(2));
    assert_eq!(l.len().unwrap(), 121);
}

#[mp::test]
fn queue_between_processes() {
    let m = Manager::new().unwrap();
    let q = m.queue::<String>().unwrap();
    spawn_all(produce, (0..3).map(|w| (q.clone(), w, 30)));
    assert_eq!(q.qsize().unwrap(), 90);
    let mut got: Vec<String> = (0..90).map(|_| q.get().unwrap()).collect();
    // FIFO per producer.
    for w in 0..3 {
        let mine: Vec<&String> = got.iter().filter(|s| s.starts_with(&format!("{w}:"))).collect();
        let want: Vec<String> = (0..30).map(|i| format!("{w}:{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
    got.clear();
    assert_eq!(q.try_get().unwrap(), None);
    assert!(matches!(q.get_timeout(Duration::from_millis(30)), Err(Error::Timeout { .. })));
    // A blocking get wakes when a child puts.
    let mut p = Process::new(produce, (q.clone(), 9, 1));
    p.start().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), "9:0");
    p.join().unwrap();
}

#[mp::test]
fn value_and_lock_from_several_processes() {
    let m = Manager::new().unwrap();
    let v = m.value(0i64).unwrap();
    let lock = m.lock().unwrap();
    spawn_all(add_under_lock, (0..4).map(|_| (v.clone(), lock.clone(), 25)));
    assert_eq!(v.get().unwrap(), 100);
    let g = lock.lock().unwrap();
    assert!(lock.try_lock().unwrap().is_none());
    assert!(matches!(lock.lock_timeout(Duration::from_millis(20)), Err(Error::Timeout { .. })));
    drop(g);
    assert!(!lock.is_locked().unwrap());
}

#[mp::test]
fn event_wakes_waiting_processes() {
    let m = Manager::new().unwrap();
    let ev = m.event().unwrap();
    let mut readies = Vec::new();
    let mut ps: Vec<_> = (0..3)
        .map(|_| {
            let (ready_rx, ready_tx) = Pipe::new::<()>().unwrap();
            readies.push(ready_rx);
            Process::new(wait_event, (ev.clone(), ready_tx))
        })
        .collect();
    ps.iter_mut().for_each(|p| p.start().unwrap());
    for r in &readies {
        r.recv().unwrap();
    }
    assert!(!ev.is_set().unwrap());
    ev.set().unwrap();
    assert!(ps.iter_mut().all(|p| p.join().unwrap()));
    ev.clear().unwrap();
    assert!(!ev.is_set().unwrap());
}

#[mp::test]
fn namespace_set_in_a_child() {
    let m = Manager::new().unwrap();
    let ns = m.namespace().unwrap();
    spawn_all(set_fields, [ns.clone()]);
    assert_eq!(ns.get::<u64>("count").unwrap(), Some(3));
    assert_eq!(ns.get::<String>("label").unwrap().as_deref(), Some("from a child"));
    assert_eq!(ns.names().unwrap(), ["count", "label"]);
    assert!(ns.remove("count").unwrap());
    assert_eq!(ns.get::<u64>("count").unwrap(), None);
}

#[mp::test]
fn nested_proxies_stay_live() {
    let m = Manager::new().unwrap();
    let d = m.dict::<String, ListProxy<String>>().unwrap();
    {
        let l = m.list::<String>().unwrap();
        l.push("first".into()).unwrap();
        d.insert("log".into(), l).unwrap();
        // Our only proxy to the list is gone: the dict's entry keeps it alive.
    }
    spawn_all(push_through_dict, [d.clone()]);
    let l = d.get("log").unwrap().unwrap();
    assert_eq!(l.to_vec().unwrap(), ["first", "from a child"]);
    // Removed from the dict, it lives on through the proxy we hold.
    let removed = d.remove("log").unwrap().unwrap();
    drop(removed);
    assert_eq!(l.len().unwrap(), 2);
}

#[mp::test]
fn managed_type_from_several_processes() {
    let m = Manager::new().unwrap();
    let c: CounterProxy = m.create(Counter::zero()).unwrap();
    let lasts = spawn_all(incr_many, (0..4).map(|_| (c.clone(), 25)));
    assert_eq!(c.get().unwrap(), 100);
    assert!(lasts.contains(&100));
    assert_eq!(c.incr(5).unwrap(), 105);
}

#[mp::test]
fn managed_method_panic_is_an_error_and_the_server_lives() {
    let m = Manager::new().unwrap();
    let c = m.create(Counter { n: 1 }).unwrap();
    match c.fail("on purpose".into()) {
        Err(Error::Panic { message, worker, .. }) => {
            assert!(message.contains("asked to fail: on purpose"), "{message}");
            assert!(worker.ends_with("Counter::fail"), "{worker}");
        }
        other => panic!("expected Error::Panic, got {other:?}"),
    }
    assert_eq!(c.incr(1).unwrap(), 2, "the object and the server survive the panic");
}

#[mp::test]
fn unknown_method_is_refused() {
    let m = Manager::new().unwrap();
    let c = m.create(Counter { n: 0 }).unwrap();
    // The same object seen through another type's proxy: only Counter's methods exist.
    let json = serde_json::to_string(&c).unwrap();
    let other: OtherProxy = serde_json::from_str(&json).unwrap();
    match other.only_here() {
        Err(Error::Invalid(msg)) => assert!(msg.contains("no exposed method `only_here`"), "{msg}"),
        r => panic!("expected Error::Invalid, got {r:?}"),
    }
    let d: DictProxy<u8, u8> = serde_json::from_str(&json).unwrap();
    assert!(matches!(d.len(), Err(Error::Invalid(_))));
    assert_eq!(c.get().unwrap(), 0);
}

#[mp::test]
fn bad_frames_do_not_kill_the_server() {
    let m = Manager::new().unwrap();
    let v = m.value(5u32).unwrap();
    // Garbage instead of the handshake.
    let mut raw = std::os::unix::net::UnixStream::connect(socket_path(&m)).unwrap();
    raw.write_all(b"this is not an mp frame at all").unwrap();
    drop(raw);
    // After the handshake, a well-formed frame that is not a request.
    let conn = mp::Client::connect::<()>(m.address(), m.authkey()).unwrap();
    conn.send_bytes(&[0xff, 0xff, 0xff]).unwrap();
    let reply = conn.recv_bytes().unwrap();
    assert!(!reply.is_empty());
    assert_eq!(v.get().unwrap(), 5);
}

#[mp::test]
fn manager_exits_with_its_owner() {
    let (rx, tx) = Pipe::new::<(u32, String)>().unwrap();
    let mut p = Process::new(own_a_manager, tx);
    p.start().unwrap();
    let (pid, address) = rx.recv().unwrap();
    let dir = std::path::Path::new(&address).parent().unwrap().to_path_buf();
    assert!(dir.exists());
    p.kill().unwrap();
    assert!(matches!(p.join(), Err(Error::WorkerDied { .. })));
    assert!(wait_gone(pid, Duration::from_secs(10)), "the manager exits when its owner is killed");
    assert!(!dir.exists(), "and removes its directory");
}

#[mp::test]
fn dropping_the_manager_stops_it() {
    let m = Manager::builder().authkey(b"k".to_vec()).max_connections(8).start().unwrap();
    let pid = m.pid().unwrap();
    let q = m.queue::<u8>().unwrap();
    drop(m);
    assert!(wait_gone(pid, Duration::from_secs(5)));
    assert!(matches!(q.put(1), Err(Error::Disconnected { .. })));
    assert!(matches!(Manager::builder().max_connections(0).start(), Err(Error::Invalid(_))));
}

#[mp::test]
fn a_lock_held_by_a_dead_process_is_released() {
    let m = Manager::new().unwrap();
    let lock = m.lock().unwrap();
    let (rx, tx) = Pipe::new::<()>().unwrap();
    let mut p = Process::new(hold_lock_until_killed, (lock.clone(), tx));
    p.start().unwrap();
    rx.recv().unwrap();
    assert!(lock.try_lock().unwrap().is_none());
    p.kill().unwrap();
    assert!(matches!(p.join(), Err(Error::WorkerDied { .. })));
    let g =
        lock.lock_timeout(Duration::from_secs(20)).expect("released when its holder's connections closed");
    g.unlock().unwrap();
}

#[mp::test]
fn a_blocking_get_does_not_hold_up_other_calls() {
    let m = Manager::new().unwrap();
    let q = m.queue::<u32>().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    let q2 = q.clone();
    let waiter = std::thread::spawn(move || q2.get_timeout(Duration::from_secs(20)));
    // Calls from this thread go on another connection while the waiter blocks.
    for i in 0..50 {
        d.insert(i, i).unwrap();
    }
    q.put(7).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), 7);
    assert_eq!(d.len().unwrap(), 50);
}

#[mp::test]
fn connections_over_the_limit_are_refused() {
    let m = Manager::builder().max_connections(1).start().unwrap();
    let ev = m.event().unwrap(); // this process's connection is now the only one allowed
    let refused = spawn_all(is_set_or_error, [ev.clone()]).remove(0);
    assert!(refused.contains("max_connections"), "{refused}");
    assert!(!ev.is_set().unwrap(), "the connection in use still works");
}

#[mp::test]
fn objects_are_freed_when_nothing_holds_them() {
    let m = Manager::new().unwrap();
    let gone = |json: &str| {
        let p: ListProxy<u8> = serde_json::from_str(json).unwrap();
        matches!(p.len(), Err(Error::Invalid(msg)) if msg.contains("no longer exists"))
    };
    // A copy made outside mp holds no reference until its first call.
    let l = m.list::<u8>().unwrap();
    let json = serde_json::to_string(&l).unwrap();
    let clone = l.clone();
    drop(l);
    assert_eq!(clone.len().unwrap(), 0, "a clone shares the reference");
    drop(clone);
    assert!(gone(&json));

    // Stored in a dict: the entry holds it; removed and dropped: freed.
    let d = m.dict::<String, ListProxy<u8>>().unwrap();
    let l = m.list::<u8>().unwrap();
    let json = serde_json::to_string(&l).unwrap();
    d.insert("l".into(), l).unwrap();
    assert!(!gone(&json));
    let out = d.remove("l").unwrap().unwrap();
    assert_eq!(out.len().unwrap(), 0);
    drop(out);
    assert!(gone(&json));

    // A proxy used only as a lookup key is not kept.
    let keyed = m.dict::<ListProxy<u8>, u8>().unwrap();
    let l = m.list::<u8>().unwrap();
    let json = serde_json::to_string(&l).unwrap();
    assert!(!keyed.contains_key(&l).unwrap());
    drop(l);
    assert!(gone(&json));

    // Freeing a container frees what it held.
    let inner = m.list::<u8>().unwrap();
    let json = serde_json::to_string(&inner).unwrap();
    let outer = m.list::<ListProxy<u8>>().unwrap();
    outer.push(inner).unwrap();
    drop(outer);
    assert!(gone(&json));
}

#[mp::test]
fn a_leaked_manager_exits_with_its_owner() {
    let mut p = Process::new(leak_a_manager, ());
    p.start().unwrap();
    // The owner's exit does not wait for its manager...
    let (pid, address) = p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    // ...which notices the exit, removes its directory and exits.
    assert!(wait_gone(pid, Duration::from_secs(10)));
    assert!(!std::path::Path::new(&address).parent().unwrap().exists());
}

#[mp::test]
fn a_proxy_passed_through_a_queue_stays_live() {
    let m = Manager::new().unwrap();
    let q = m.queue::<ListProxy<String>>().unwrap();
    let l = m.list::<String>().unwrap();
    l.push("kept".into()).unwrap();
    spawn_all(forward, [(l.clone(), q.clone())]);
    // The queued item holds the list; the child that put it has exited.
    drop(l);
    let l = q.get_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(l.to_vec().unwrap(), ["kept"]);
}

#[mp::test]
fn busy_polling_stops_when_the_client_goes_quiet() {
    let m = Manager::new().unwrap();
    let pid = m.pid().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    // A tight loop of calls: both sides poll for the next message instead of sleeping.
    for i in 0..3_000 {
        d.insert(i % 10, i).unwrap();
    }
    assert_eq!(d.get(&9).unwrap(), Some(2_999));
    // Then nothing: the server thread must sleep, not poll (a spinning thread would burn
    // the whole second).
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(used <= 10, "an idle manager used {used}0 ms of CPU in 1 s");
    assert_eq!(d.get(&9).unwrap(), Some(2_999));
}

#[mp::worker]
fn bump_shared(d: DictProxy<String, u64>, times: u64) {
    for _ in 0..times {
        d.update_with("n".into(), |n| n.copied().unwrap_or(0) + 1).unwrap();
    }
}

#[mp::worker]
fn add_entries(d: DictProxy<u8, std::collections::HashMap<String, u32>>, who: u32) {
    for i in 0..50 {
        d.update_with(0, |m| {
            let mut m = m.cloned().unwrap_or_default();
            m.insert(format!("{who}-{i}"), i);
            m
        })
        .unwrap();
    }
}

#[mp::test]
fn update_with_loses_no_update_between_processes() {
    let m = Manager::new().unwrap();
    let d = m.dict::<String, u64>().unwrap();
    let mut ps: Vec<_> = (0..3).map(|_| Process::new(bump_shared, (d.clone(), 300))).collect();
    ps.iter_mut().for_each(|p| p.start().unwrap());
    ps.iter_mut().for_each(|p| p.join().unwrap());
    assert_eq!(d.get("n").unwrap(), Some(900));
    // Values whose encoding is not canonical (a HashMap re-encodes in another order once
    // decoded): the swap compares the stored bytes, so updates still go through.
    let maps = m.dict::<u8, std::collections::HashMap<String, u32>>().unwrap();
    let mut ps: Vec<_> = (0..2).map(|who| Process::new(add_entries, (maps.clone(), who))).collect();
    ps.iter_mut().for_each(|p| p.start().unwrap());
    ps.iter_mut().for_each(|p| p.join().unwrap());
    let all = maps.get(&0).unwrap().unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all["1-49"], 49);
}

#[mp::test]
fn a_call_to_a_stuck_manager_times_out_and_the_proxy_lives_on() {
    use rustix::process::{Pid, Signal, kill_process};
    let m = Manager::new().unwrap();
    let pid = Pid::from_raw(m.pid().unwrap() as i32).unwrap();
    let d = m.dict::<u8, String>().unwrap();
    d.insert(1, "one".into()).unwrap();
    m.set_call_timeout(Some(Duration::from_millis(300)));
    // A stopped server never answers and never closes the connection.
    kill_process(pid, Signal::STOP).unwrap();
    // The stop takes effect when each thread next enters the kernel: wait until all have.
    let stopped = |tid: &std::fs::DirEntry| {
        let stat = std::fs::read_to_string(tid.path().join("stat")).unwrap_or_default();
        matches!(stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()), Some('T' | 't'))
    };
    while !std::fs::read_dir(format!("/proc/{}/task", m.pid().unwrap()))
        .unwrap()
        .flatten()
        .all(|t| stopped(&t))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = d.get(&1);
    let late_insert = d.insert(2, "two".into());
    kill_process(pid, Signal::CONT).unwrap();
    match r {
        Err(Error::Timeout { what, after }) => {
            assert_eq!(after, Duration::from_millis(300));
            assert!(what.contains("may or may not have taken effect"), "{what}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The next call needs a new connection, whose handshake the stopped server cannot
    // answer: bounded by the call timeout too, and nothing was sent.
    assert!(matches!(late_insert, Err(Error::Timeout { .. })), "{late_insert:?}");
    // Once it runs again, the same proxies work (their session was kept).
    assert_eq!(d.get(&1).unwrap().as_deref(), Some("one"));
    assert_eq!(d.len().unwrap(), 1);
    d.insert(2, "two".into()).unwrap();
    assert_eq!(d.get(&2).unwrap().as_deref(), Some("two"));
}
