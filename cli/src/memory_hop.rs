//! The machine's floor under a point read: how long one dependent load from a random
//! cache line takes when the lines live in a working set as large as the one the
//! benchmark's reads touch.
//!
//! A point read is a chain of such loads (index entry, record slot, record), each
//! needing the previous one's answer, so no processor overlaps them. Reported beside
//! the read rates, it says how many of these hops a read costs, and so how far any
//! layout with that many hops could go on this machine: on a shared, virtualised
//! host the hop itself moves from run to run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::measure::cell_bar;

/// Bytes between two nodes of the chain: one cache line each.
const LINE_WORDS: usize = 8;

/// Nanoseconds per dependent load over a random cyclic chain through `lines` cache
/// lines (`lines >= 2`), measured for `duration`.
pub fn hop_ns(lines: usize, duration: Duration) -> f64 {
    let lines = lines.max(2);
    let chain = random_cycle(lines);
    let bar = cell_bar("memory hop", duration);
    let started = Instant::now();
    let deadline = started + duration;
    let (mut at, mut hops) = (0usize, 0u64);
    while Instant::now() < deadline {
        for _ in 0..4096 {
            at = chain[at * LINE_WORDS] as usize;
        }
        hops += 4096;
    }
    black_box(at);
    let ns = started.elapsed().as_nanos() as f64 / hops as f64;
    bar.finish_with_message(format!("{ns:.1} ns per hop"));
    ns
}

/// One node per cache line; node `i`'s first word names the next node. The nodes
/// are shuffled and each points at the next in that order, the last at the first:
/// one cycle through all of them, so every hop visits a new line, and one the
/// prefetcher cannot guess.
fn random_cycle(lines: usize) -> Vec<u64> {
    let mut order: Vec<usize> = (0..lines).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..lines).rev() {
        // xorshift64: any fixed sequence will do, it only has to defeat the prefetcher.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut chain = vec![0u64; lines * LINE_WORDS];
    for w in order.windows(2) {
        chain[w[0] * LINE_WORDS] = w[1] as u64;
    }
    chain[order[lines - 1] * LINE_WORDS] = order[0] as u64;
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_visits_every_line_once_before_it_returns() {
        for lines in [2, 3, 17, 1000] {
            let chain = random_cycle(lines);
            let mut seen = vec![false; lines];
            let mut at = 0usize;
            for _ in 0..lines {
                assert!(!seen[at], "{lines} lines: node {at} visited twice");
                seen[at] = true;
                at = chain[at * LINE_WORDS] as usize;
            }
            assert_eq!(at, 0, "{lines} lines: the chain does not close");
        }
    }
}
