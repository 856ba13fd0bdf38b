//! etcd over TLS with client certificates: a real etcd (`/usr/bin/etcd`)
//! started with a CA and certificates the test makes (`openssl`), serving
//! clients only over TLS with `--client-cert-auth`.

use std::sync::Arc;
use std::time::Duration;

use socketplane_store::conformance::{self, etcd_server::EtcdTestServer};
use socketplane_store::etcd::{EtcdOptions, EtcdStore};
use socketplane_store::{Store, StoreError};

fn quick(tls: Option<socketplane_store::etcd::EtcdTls>) -> EtcdOptions {
    EtcdOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        tls,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_needs_the_ca_and_a_client_certificate() {
    let srv = EtcdTestServer::start_tls()
        .await
        .unwrap_or_else(|e| panic!("cannot start etcd with TLS: {e}"));
    let url = format!("etcds://{}", srv.endpoint());

    // Plain HTTP/2 to a TLS port: no answer.
    let plain = EtcdStore::connect_with(&[srv.endpoint()], quick(None)).await;
    assert!(
        matches!(plain, Err(StoreError::Unavailable(_))),
        "{plain:?}"
    );
    // etcds:// without a CA is a clear configuration error.
    let no_ca = EtcdStore::from_url_with(&url, quick(None)).await;
    assert!(
        matches!(&no_ca, Err(StoreError::InvalidArgument(m)) if m.contains("--etcd-ca")),
        "{no_ca:?}"
    );
    // The right CA but no client certificate: etcd refuses the handshake.
    let anonymous =
        EtcdStore::from_url_with(&url, quick(Some(srv.client_tls(false).unwrap()))).await;
    assert!(
        matches!(anonymous, Err(StoreError::Unavailable(_))),
        "{anonymous:?}"
    );
    // A CA that did not sign the server: the server is not trusted.
    let mut stranger = srv.client_tls(true).unwrap();
    stranger.ca = stranger.identity.clone().unwrap().0;
    let untrusted = EtcdStore::from_url_with(&url, quick(Some(stranger))).await;
    assert!(
        matches!(untrusted, Err(StoreError::Unavailable(_))),
        "{untrusted:?}"
    );

    // With the client certificate: the store's basics hold.
    let tls = srv.client_tls(true).unwrap();
    let store = EtcdStore::from_url_with(&url, quick(Some(tls.clone())))
        .await
        .unwrap_or_else(|e| panic!("connect over TLS: {e}"));
    assert!(store.status().await.unwrap().healthy);
    for name in [
        "put_get_revisions",
        "txn_success_and_failure",
        "watch_ordering_no_gaps",
        "lease_keep_alive_extends",
    ] {
        let store = EtcdStore::from_url_with(&url, quick(Some(tls.clone())))
            .await
            .unwrap();
        conformance::run_one(name, Arc::new(store) as Arc<dyn Store>).await;
    }
}
