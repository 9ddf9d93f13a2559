//! The conformance suite on the embedded (fjall) backend and the memory helper.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

mod embedded {
    use std::sync::Arc;

    use neurocube_store::conformance::Fixture;
    use neurocube_store::embedded::{EmbeddedOptions, EmbeddedStore};

    async fn make() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&EmbeddedOptions::new(dir.path())).unwrap();
        Fixture {
            store: Arc::new(store),
            guard: Box::new(dir),
        }
    }

    neurocube_store::conformance_tests!(make());
}

mod memory {
    use std::sync::Arc;

    use neurocube_store::conformance::Fixture;
    use neurocube_store::memory::MemoryStore;

    async fn make() -> Fixture {
        Fixture {
            store: Arc::new(MemoryStore::default()),
            guard: Box::new(()),
        }
    }

    neurocube_store::conformance_tests!(make());
}
