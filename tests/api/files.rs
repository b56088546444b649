//! Files tokend creates hold secrets (password hashes, session ids): only
//! their owner may read them.

use std::os::unix::fs::PermissionsExt;

use crate::helpers::{spawn_app, Backend};

fn mode(path: &str) -> String {
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_database_and_its_wal_files_are_private() {
    let app = spawn_app(Backend::Sqlite).await;
    // A write: the WAL and its index exist while connections are open.
    app.user_with_tokens("alice", "pw12345").await;
    let path = app
        .database_url
        .strip_prefix("sqlite://")
        .expect("a sqlite:// URL")
        .to_owned();
    for file in [path.clone(), format!("{path}-wal"), format!("{path}-shm")] {
        assert_eq!(mode(&file), "600", "{file}");
    }
}
