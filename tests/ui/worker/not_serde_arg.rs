pub struct Config {
    pub verbose: bool,
}

#[mp::worker]
fn run(id: u32, config: Config) -> u32 {
    if config.verbose { id } else { 0 }
}

fn main() {}
