//! Asking the CPU for cache lines ahead of their use.
//!
//! The one module of the workspace with `unsafe` code, for one instruction:
//! stable Rust has no safe prefetch. It earns its place in a backup's apply
//! loop (see `kirikae_replicate`'s `applier/prefetch.rs`), where it took a
//! restart's ordered replay of the telecom traffic from 0.97–1.03 to 0.85–0.93 µs
//! of CPU per transaction (`kirikae bench replicate`, `backup_replay`, alternating
//! binaries). Tested under Miri: `cargo +nightly miri test -p kirikae-engine prefetch`.

/// Asks for every cache line `*at` spans to be brought into every cache level.
/// A hint: it never faults, never blocks, and changes nothing a later read
/// returns.
#[inline(always)]
pub(crate) fn prefetch<T>(at: &T) {
    let first = (at as *const T).cast::<u8>();
    line(first);
    let last = first.wrapping_add(std::mem::size_of::<T>().saturating_sub(1));
    if (last as usize) / 64 != (first as usize) / 64 {
        line(last);
    }
}

#[inline(always)]
fn line(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `_mm_prefetch` is unsafe only because it is an SSE instruction
    // (every x86_64 CPU has SSE). PREFETCHT0 reads nothing into a register and
    // cannot fault, whatever the address; ours point into live objects.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::prefetch;

    /// Under Miri (`cargo +nightly miri test -p kirikae-engine prefetch`): asking
    /// for the lines of live objects of every size, one spanning two lines, one
    /// freed right after, is defined behaviour and changes nothing they hold.
    #[test]
    fn prefetching_live_objects_changes_nothing() {
        let small = 7u8;
        let spanning = [3u64; 16];
        let boxed = Box::new([9u32; 100]);
        prefetch(&small);
        prefetch(&spanning);
        prefetch(&spanning[7]);
        prefetch(&*boxed);
        prefetch(&());
        drop(boxed);
        assert_eq!(small, 7);
        assert_eq!(spanning, [3u64; 16]);
    }

    /// Every stage of [`Table::prefetch`](crate::Table::prefetch), for keys the
    /// table has, had and never had, under Miri too: the table reads the same.
    #[test]
    fn prefetching_a_table_changes_nothing() -> crate::Result<()> {
        use crate::{Column, ColumnType, Key, PrefetchStage, Schema, Table, Value};
        let schema = Schema::new(
            vec![
                Column::new("id", ColumnType::Int),
                Column::new("name", ColumnType::Text),
            ],
            &["id"],
        )?;
        let table = Table::new("t", schema);
        for id in 0..8i64 {
            table.install(vec![Value::Int(id), Value::from(format!("n{id}"))])?;
        }
        let gone = table
            .index
            .get(&Key::from(3i64))
            .map(|rid| table.remove(rid));
        assert!(gone.is_some_and(|row| row.is_some()));
        for stage in [
            PrefetchStage::IndexEntry,
            PrefetchStage::Slot,
            PrefetchStage::Image,
        ] {
            for id in [0i64, 3, 7, 100] {
                table.prefetch(&Key::from(id), stage);
            }
        }
        for id in 0..8i64 {
            let row = table.get(&Key::from(id));
            assert_eq!(row.is_some(), id != 3, "key {id}");
            if let Some(row) = row {
                assert_eq!(&row[..], &[Value::Int(id), Value::from(format!("n{id}"))]);
            }
        }
        assert_eq!(table.len(), 7);
        Ok(())
    }
}
