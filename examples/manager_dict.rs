//! A manager's dict filled by several worker processes, and a `#[mp::managed]` type.
//!
//! ```text
//! cargo run --example manager_dict
//! ```

use mp::{DictProxy, Manager, Process};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Stats {
    words: u64,
}

#[mp::managed]
impl Stats {
    pub fn add(&mut self, n: u64) -> u64 {
        self.words += n;
        self.words
    }
}

/// Counts the words of one line into the shared dict and the shared stats.
#[mp::worker]
fn count(line: String, counts: DictProxy<String, usize>, stats: StatsProxy) {
    let words: Vec<&str> = line.split_whitespace().collect();
    for w in &words {
        // Lines share words: `update_with` is one atomic read-modify-write (a `get` then an
        // `insert` could lose another process's update in between).
        counts.update_with(w.to_string(), |n| n.copied().unwrap_or(0) + 1).unwrap();
    }
    // A panic here would come back to `join` as mp::Error::Panic.
    stats.add(words.len() as u64).unwrap();
}

#[mp::main]
fn main() -> Result<(), mp::Error> {
    let manager = Manager::new()?;
    let counts = manager.dict::<String, usize>()?;
    let stats = manager.create(Stats { words: 0 })?;
    let lines = ["alpha beta alpha", "gamma beta epsilon", "zeta alpha"];
    let mut workers: Vec<_> =
        lines.iter().map(|l| Process::new(count, (l.to_string(), counts.clone(), stats.clone()))).collect();
    for p in &mut workers {
        p.start()?;
    }
    for p in &mut workers {
        p.join()?;
    }
    let mut items = counts.items()?;
    items.sort();
    println!("{items:?}");
    println!("{} words", stats.add(0)?);
    assert_eq!(items.len(), 5);
    assert_eq!(counts.get("alpha")?, Some(3));
    Ok(())
}
