//! Deterministic randomized robustness: random, truncated and mutated bytes thrown at the
//! frame reader and at both sides of the Listener/Client handshake must end in a clean
//! error, never a panic or a hang. (`fuzz/` runs the same entry points under cargo-fuzz.)

use mp_runtime::__fuzz;

/// xorshift64*: a fixed seed makes every run throw the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn frame(kind: u8, nfds: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = b"mp\x01".to_vec();
    f.push(kind);
    f.extend(nfds.to_le_bytes());
    f.extend((payload.len() as u64).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

/// Plausible handshake messages: the real prefixes with random or well-formed tails.
fn handshake_message(rng: &mut Rng) -> Vec<u8> {
    let mut m = match rng.below(6) {
        0 => b"#CHALLENGE#{sha256}".to_vec(),
        1 => b"#WELCOME#".to_vec(),
        2 => b"#FAILURE#".to_vec(),
        3 => b"#NOAUTH#".to_vec(),
        4 => b"{sha256}".to_vec(),
        _ => Vec::new(),
    };
    let tail = match rng.below(4) {
        0 => 0,
        1 => 1,
        2 => 32,
        _ => 41, // a nonce and a version byte
    };
    m.extend(rng.bytes(tail));
    if rng.below(3) == 0 {
        if let Some(last) = m.last_mut() {
            *last = 1; // our protocol version
        }
    }
    m
}

/// One input: random bytes, or frames (handshake or not) cut and flipped at random.
fn input(rng: &mut Rng) -> Vec<u8> {
    let mut data = match rng.below(3) {
        0 => {
            let n = rng.below(300);
            rng.bytes(n)
        }
        _ => {
            let mut d = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let kind = [6, 6, 6, 16, 17, 1, 200][rng.below(7)];
                let nfds = if rng.below(8) == 0 { rng.below(100) as u32 } else { 0 };
                let payload = if kind == 6 {
                    handshake_message(rng)
                } else {
                    let n = rng.below(64);
                    rng.bytes(n)
                };
                let mut f = frame(kind, nfds, &payload);
                if rng.below(8) == 0 {
                    // A lying length.
                    let len = [0u64, 1, 255, 257, 1 << 20, u64::MAX][rng.below(6)];
                    f[8..16].copy_from_slice(&len.to_le_bytes());
                }
                d.extend(f);
            }
            d
        }
    };
    if !data.is_empty() && rng.below(3) == 0 {
        let cut = rng.below(data.len());
        data.truncate(cut);
    }
    if !data.is_empty() && rng.below(3) == 0 {
        let i = rng.below(data.len());
        data[i] ^= 1 << rng.below(8);
    }
    data
}

#[test]
fn smoke_the_frame_reader_survives_garbage() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..3000 {
        let data = input(&mut rng);
        let limit = [16u64, 256, 1 << 20][rng.below(3)];
        __fuzz::frames(&data, limit, rng.below(2) == 0);
    }
}

#[test]
fn a_well_formed_stream_decodes_completely() {
    let mut data = Vec::new();
    for i in 0..10u8 {
        data.extend(frame(17, 0, &[i; 5]));
    }
    assert_eq!(__fuzz::frames(&data, 1 << 20, true), 10);
    // The same bytes cut anywhere decode the whole frames before the cut, then end cleanly.
    for cut in 0..data.len() {
        assert_eq!(__fuzz::frames(&data[..cut], 1 << 20, true), cut / 21);
    }
}

#[test]
fn both_sides_of_the_handshake_survive_garbage() {
    let mut rng = Rng(0x5eed_0002);
    let keys: [Option<&[u8]>; 3] = [None, Some(b""), Some(b"key")];
    for _ in 0..3000 {
        let data = input(&mut rng);
        let key = keys[rng.below(3)];
        // Nobody can answer a fresh random challenge by chance: garbage never authenticates.
        if let Ok(()) = __fuzz::server_stream(&data, key) {
            assert!(key.is_none(), "garbage passed a keyed listener: {data:?}");
        }
        if let Ok(()) = __fuzz::client_stream(&data, key) {
            assert!(key.is_none(), "garbage passed a keyed client: {data:?}");
        }
        __fuzz::messages(&data);
    }
}
