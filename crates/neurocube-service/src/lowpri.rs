//! CPU work of background tasks at a lower scheduling priority.
//!
//! The label flusher decodes, patches and re-encodes whole chunks (about
//! 2 MiB each for uint64 labels); on the global rayon pool that work took
//! both cores from the requests it runs behind, and a bulk object storm's
//! request p99 went from 13 ms to 68 ms while a flush ran (BENCHMARKS.md,
//! "The flusher behind a storm"). Its threads here run at nice
//! [`NICE`] (Linux `setpriority` per thread, as RocksDB does for its
//! low-priority compaction pool): the scheduler gives them what requests
//! leave, and all of it when the server is otherwise idle.

use std::sync::OnceLock;

/// The nice value of the pool's threads: weight 110 against 1,024 for a
/// thread at 0, so about a tenth of a contended core.
pub const NICE: i32 = 10;

/// The pool (as many threads as cores), made on first use; `None` if the
/// OS refused its threads (then the work runs on rayon's global pool).
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("lowpri-{i}"))
            .start_handler(|_| lower_this_thread())
            .build()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no low-priority pool; background work runs at normal priority");
            })
            .ok()
    })
    .as_ref()
}

/// Run `f` on the pool (use rayon's parallel iterators inside it) from
/// async code, without holding a runtime thread. `None` if `f` panicked
/// (the panic is caught: a rayon pool would abort the process).
pub async fn run<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => {
            let _ = tx.send(v);
        }
        Err(_) => tracing::error!("a low-priority background task panicked"),
    };
    match pool() {
        Some(p) => p.spawn(job),
        None => rayon::spawn(job),
    }
    rx.await.ok()
}

/// Lower the calling thread's priority to [`NICE`] (Linux; elsewhere a
/// no-op).
fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; on Linux,
        // PRIO_PROCESS with a thread id sets that one thread's nice value.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
        };
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "could not lower a background thread's priority"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pool_threads_run_at_the_lower_priority() {
        // SAFETY: reads the calling thread's nice value.
        let caller = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = caller();
        let nice = super::run(|| {
            // SAFETY: as above; reads the calling thread's nice value.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            }
        })
        .await
        .unwrap();
        assert_eq!(nice, super::NICE);
        // The caller's own priority is untouched.
        assert_eq!(caller(), before);
    }

    #[tokio::test]
    async fn a_panicking_task_is_none_and_the_pool_goes_on() {
        let r: Option<()> = super::run(|| panic!("boom")).await;
        assert!(r.is_none());
        assert_eq!(super::run(|| 7).await, Some(7));
    }
}
