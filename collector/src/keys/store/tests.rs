use super::*;
use crate::keys::COLLECTOR_ACTOR_ID;
use codestax_common::{ActorKind, Rules, TargetKind, record_from_value, validate};
use sha2::Digest;
use std::time::Instant;

fn temp_store() -> (tempfile::TempDir, KeyStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open(dir.path()).unwrap();
    (dir, store)
}

/// The token with the character at `i` replaced by another valid one.
fn flip(token: &str, i: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

#[test]
fn open_creates_an_empty_versioned_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested").join("data");
    let store = KeyStore::open(&data_dir).unwrap();
    assert_eq!(store.path(), data_dir.join(KEYS_FILE));
    let doc: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(store.path()).unwrap()).unwrap();
    assert_eq!(doc, serde_json::json!({"version": 1, "keys": []}));
    assert!(store.list(None).is_empty());
    assert!(!data_dir.join(TEMP_FILE).exists());
}

#[test]
fn create_then_authenticate() {
    let (_dir, store) = temp_store();
    let (info, token) = store
        .create("acme", Role::OrgAdmin, Some("laptop"))
        .unwrap();
    assert_eq!(info.org_id, "acme");
    assert_eq!(info.role, Role::OrgAdmin);
    assert_eq!(info.name.as_deref(), Some("laptop"));
    assert!(is_valid_key_id(&info.id), "{}", info.id);
    assert!(info.revoked_at.is_none());

    let found = store.authenticate(token.expose()).expect("the right token");
    assert_eq!(found, info);
    assert!(found.can_read_log_of("acme"));
    assert!(!found.can_read_log_of("globex"));

    let t = token.expose();
    assert_eq!(store.authenticate(""), None);
    assert_eq!(store.authenticate("csk_"), None);
    assert_eq!(store.authenticate(&t[..t.len() - 1]), None);
    assert_eq!(store.authenticate(&format!("{t}0")), None);
    assert_eq!(store.authenticate(&t.to_uppercase()), None);
    for i in [0, TOKEN_PREFIX.len(), t.len() / 2, t.len() - 1] {
        assert_eq!(store.authenticate(&flip(t, i)), None, "changed at {i}");
    }
    let (_, other) = store.create("acme", Role::OrgAdmin, None).unwrap();
    assert_ne!(store.authenticate(other.expose()).unwrap().id, info.id);
}

#[test]
fn the_file_holds_hashes_never_tokens() {
    let (_dir, store) = temp_store();
    let (info, token) = store.create("acme", Role::Ingest, Some("agent-1")).unwrap();
    let raw = fs::read_to_string(store.path()).unwrap();
    assert!(!raw.contains(token.expose()), "{raw}");
    assert!(
        !raw.contains(&token.expose()[TOKEN_PREFIX.len()..]),
        "{raw}"
    );
    let doc: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc["version"], 1);
    let key = &doc["keys"][0];
    assert_eq!(key["id"], info.id.as_str());
    assert_eq!(key["role"], "INGEST");
    assert_eq!(key["token_sha256"], token.hash().to_hex().as_str());
    assert_eq!(
        key["token_sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(token.expose().as_bytes()))
    );
    assert!(key["revoked_at"].is_null());
    assert!(!format!("{store:?}{info:?}").contains(token.expose()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}

#[test]
fn revoke_stops_authentication_and_only_once() {
    let (_dir, store) = temp_store();
    let (info, token) = store.create("acme", Role::OrgOwner, None).unwrap();
    let revoked = store.revoke(&info.id).unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.authenticate(token.expose()), None);
    assert_eq!(store.get(&info.id), Some(revoked.clone()));

    let err = store.revoke(&info.id).unwrap_err();
    assert!(matches!(err, KeyError::AlreadyRevoked { .. }), "{err:?}");
    assert!(err.to_string().contains("already revoked"), "{err}");
    let err = store.revoke("key_0123456789abcdef").unwrap_err();
    assert!(matches!(err, KeyError::NotFound(_)), "{err:?}");

    // The revocation is durable.
    let reopened = KeyStore::open(_dir.path()).unwrap();
    assert_eq!(reopened.authenticate(token.expose()), None);
    assert_eq!(reopened.list(None), vec![revoked]);
}

#[test]
fn input_is_validated() {
    let (_dir, store) = temp_store();
    for org in ["", "has space", "a/b", &"x".repeat(65)] {
        let err = store.create(org, Role::Member, None).unwrap_err();
        assert!(matches!(err, KeyError::InvalidOrg(_)), "{org:?}: {err:?}");
    }
    for name in ["", "line\nbreak", &"n".repeat(129)] {
        let err = store.create("acme", Role::Member, Some(name)).unwrap_err();
        assert!(matches!(err, KeyError::InvalidName(_)), "{name:?}: {err:?}");
    }
    assert!(store.list(None).is_empty());
}

#[test]
fn list_filters_by_org_oldest_first() {
    let (_dir, store) = temp_store();
    let a1 = store.create("acme", Role::OrgOwner, None).unwrap().0;
    let g1 = store.create("globex", Role::Ingest, None).unwrap().0;
    let a2 = store.create("acme", Role::Member, None).unwrap().0;
    assert_eq!(store.list(Some("acme")), vec![a1.clone(), a2.clone()]);
    assert_eq!(store.list(Some("globex")), vec![g1.clone()]);
    assert_eq!(store.list(None), vec![a1, g1, a2]);
    assert!(store.list(Some("initech")).is_empty());
}

#[test]
fn another_store_sees_changes_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let server = KeyStore::open(dir.path()).unwrap();
    let cli = KeyStore::open(dir.path()).unwrap();
    assert!(!server.reload_if_changed().unwrap(), "nothing changed yet");

    let (info, token) = cli.create("acme", Role::Ingest, None).unwrap();
    assert_eq!(server.get(&info.id), None, "not reloaded yet");
    assert!(server.reload_if_changed().unwrap());
    assert_eq!(server.authenticate(token.expose()), Some(info.clone()));
    assert!(!server.reload_if_changed().unwrap());

    cli.revoke(&info.id).unwrap();
    assert!(server.reload_if_changed().unwrap());
    assert_eq!(server.authenticate(token.expose()), None);

    // A store's own writes are already loaded.
    server.create("acme", Role::Member, None).unwrap();
    assert!(!server.reload_if_changed().unwrap());
    assert!(cli.reload_if_changed().unwrap());
    assert_eq!(cli.list(None).len(), 2);
}

#[test]
fn concurrent_creates_on_two_stores_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stores = [
        KeyStore::open(dir.path()).unwrap(),
        KeyStore::open(dir.path()).unwrap(),
    ];
    const THREADS: usize = 4;
    const PER_THREAD: usize = 8;
    let tokens: Vec<(KeyInfo, Token)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &stores[t % 2];
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            store
                                .create("acme", Role::Ingest, Some(&format!("t{t}-{i}")))
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(tokens.len(), THREADS * PER_THREAD);
    let fresh = KeyStore::open(dir.path()).unwrap();
    assert_eq!(fresh.list(None).len(), THREADS * PER_THREAD);
    for store in &stores {
        store.reload_if_changed().unwrap();
        for (info, token) in &tokens {
            assert_eq!(store.authenticate(token.expose()).as_ref(), Some(info));
        }
    }
}

#[test]
fn corrupt_or_invalid_files_are_errors_naming_the_path() {
    let cases = [
        ("{\"version\": 1, \"keys\": [", "corrupt"),
        ("", "corrupt"),
        ("{\"version\": 1, \"keys\": [], \"extra\": 1}", "corrupt"),
        ("{\"version\": 2, \"keys\": []}", "version 2"),
        (
            r#"{"version":1,"keys":[{"id":"key_0123456789abcdef","org_id":"acme","role":"ORG_OWNER",
               "created_at":"2026-01-01T00:00:00Z","token_sha256":"nothex"}]}"#,
            "token_sha256",
        ),
        (
            r#"{"version":1,"keys":[{"id":"key_0123456789abcdef","org_id":"acme","role":"ROOT",
               "created_at":"2026-01-01T00:00:00Z","token_sha256":"00"}]}"#,
            "corrupt",
        ),
        (
            r#"{"version":1,"keys":[{"id":"bad","org_id":"acme","role":"ORG_OWNER",
               "created_at":"2026-01-01T00:00:00Z","token_sha256":"00"}]}"#,
            "malformed key id",
        ),
    ];
    for (content, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        fs::write(&path, content).unwrap();
        let err = KeyStore::open(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(expected), "{content}: {message}");
        assert_eq!(fs::read_to_string(&path).unwrap(), content, "never reset");
    }
}

#[test]
fn a_corrupt_reload_keeps_the_loaded_keys() {
    let (dir, store) = temp_store();
    let (_, token) = store.create("acme", Role::OrgAdmin, None).unwrap();
    let path = dir.path().join(KEYS_FILE);
    fs::write(&path, "garbage").unwrap();
    let err = store.reload_if_changed().unwrap_err();
    assert!(matches!(err, KeyError::Corrupt { .. }), "{err:?}");
    assert!(store.authenticate(token.expose()).is_some());
    // Writers refuse to overwrite it too.
    assert!(store.create("acme", Role::Member, None).is_err());
    assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
}

#[test]
fn events_become_valid_audit_records() {
    let (_dir, store) = temp_store();
    let (owner, _) = store.create("acme", Role::OrgOwner, Some("alice")).unwrap();
    let mut recorded = Vec::new();
    let (agent, _) = store
        .create_by(&owner.id, "acme", Role::Ingest, Some("host-1"), |e| {
            recorded.push(e.clone());
            Ok(())
        })
        .unwrap();
    store
        .revoke_by(&owner.id, &agent.id, |e| {
            recorded.push(e.clone());
            Ok(())
        })
        .unwrap();
    store.revoke(&owner.id).unwrap();

    let events = store.events();
    let kinds: Vec<(KeyEventKind, &str)> =
        events.iter().map(|e| (e.kind, e.key_id.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (KeyEventKind::Created, owner.id.as_str()),
            (KeyEventKind::Created, agent.id.as_str()),
            (KeyEventKind::Revoked, agent.id.as_str()),
            (KeyEventKind::Revoked, owner.id.as_str()),
        ]
    );
    // What was recorded before each change through `*_by` is the event the store then holds.
    assert_eq!(recorded, events[1..3]);
    let rules = Rules {
        collector_entries: true,
        ..Rules::new()
    };
    for event in &events {
        let record = event.to_audit_record();
        validate(&record, &rules).unwrap();
        let parsed = record_from_value(serde_json::to_value(&record).unwrap(), &rules)
            .unwrap_or_else(|e| panic!("{event:?}: {e}"));
        assert_eq!(parsed, record);
        assert_eq!(record, event.to_audit_record(), "deterministic");
        assert_eq!(
            record.id(),
            format!(
                "codestax:apikey-{}-{}",
                if event.kind == KeyEventKind::Created {
                    "created"
                } else {
                    "revoked"
                },
                event.key_id
            )
        );
        assert_eq!(record.org_id, "acme");
        assert_eq!(record.action, event.kind.action());
        assert_eq!(record.category, "auth");
        let target = record.target.as_ref().unwrap();
        assert_eq!(target.kind, TargetKind::ApiKey);
        assert_eq!(target.id.as_deref(), Some(event.key_id.as_str()));
        assert_eq!(target.name, event.name);
        assert_eq!(record.metadata.extra["role"], event.role.as_str());
    }
    let actors: Vec<(ActorKind, String)> = events
        .iter()
        .map(|e| {
            let a = e.to_audit_record().actor;
            (a.kind, a.id)
        })
        .collect();
    assert_eq!(
        actors,
        vec![
            (ActorKind::System, COLLECTOR_ACTOR_ID.to_string()),
            (ActorKind::ApiKey, owner.id.clone()),
            (ActorKind::ApiKey, owner.id.clone()),
            (ActorKind::System, COLLECTOR_ACTOR_ID.to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reloader_picks_up_cli_keys_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = KeyStore::open(dir.path()).unwrap();
    let reloader = server.clone().spawn_reloader(RELOAD_INTERVAL);
    let cli = KeyStore::open(dir.path()).unwrap();
    let (info, token) = cli.create("acme", Role::Ingest, None).unwrap();
    let start = Instant::now();
    while server.authenticate(token.expose()).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not picked up within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cli.revoke(&info.id).unwrap();
    let start = Instant::now();
    while server.authenticate(token.expose()).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "revocation not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reloader.abort();
    assert!(reloader.await.unwrap_err().is_cancelled());
}

#[test]
fn a_change_whose_event_cannot_be_recorded_is_not_made() {
    let (_dir, store) = temp_store();
    let (owner, _) = store.create("acme", Role::OrgOwner, None).unwrap();
    let refuse = |_: &KeyEvent| Err("disk full".to_string());
    let err = store
        .create_by(&owner.id, "acme", Role::Ingest, None, refuse)
        .unwrap_err();
    assert!(matches!(err, KeyError::NotRecorded(_)), "{err:?}");
    assert_eq!(store.list(Some("acme")).len(), 1, "no key was created");
    let err = store.revoke_by(&owner.id, &owner.id, refuse).unwrap_err();
    assert!(matches!(err, KeyError::NotRecorded(_)), "{err:?}");
    assert!(!store.get(&owner.id).unwrap().is_revoked());
    // Another store on the same file sees the same: nothing was written.
    let again = KeyStore::open(store.path().parent().unwrap()).unwrap();
    assert_eq!(again.list(None), store.list(None));
}

#[test]
fn a_key_change_that_cannot_be_written_is_not_recorded() {
    let (dir, store) = temp_store();
    let (owner, _) = store.create("acme", Role::OrgOwner, None).unwrap();
    // The new file cannot be written (its temporary name is taken by a directory), as on a
    // full disk: the change is refused before its record is asked for.
    std::fs::create_dir(dir.path().join(TEMP_FILE)).unwrap();
    let recorded = std::cell::Cell::new(0);
    let record = |_: &KeyEvent| {
        recorded.set(recorded.get() + 1);
        Ok(())
    };
    let err = store
        .create_by(&owner.id, "acme", Role::Ingest, None, record)
        .unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "{err:?}");
    let err = store.revoke_by(&owner.id, &owner.id, record).unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "{err:?}");
    assert_eq!(recorded.get(), 0, "a change that was not made was recorded");
    assert_eq!(store.list(Some("acme")).len(), 1);
    assert!(!store.get(&owner.id).unwrap().is_revoked());
    // Written once the file can be: recorded, then made.
    std::fs::remove_dir(dir.path().join(TEMP_FILE)).unwrap();
    store.revoke_by(&owner.id, &owner.id, record).unwrap();
    assert_eq!(recorded.get(), 1);
    assert!(
        KeyStore::open(dir.path())
            .unwrap()
            .get(&owner.id)
            .unwrap()
            .is_revoked()
    );
}

#[test]
fn a_key_made_by_another_writer_works_at_once() {
    let (dir, server) = temp_store();
    let cli = KeyStore::open(dir.path()).unwrap();
    let (info, token) = cli.create("acme", Role::OrgAdmin, None).unwrap();
    assert_eq!(server.reloads(), 0);
    // No reload has run: the unknown token makes the server look at the file again.
    assert_eq!(server.authenticate(token.expose()), Some(info));
    assert_eq!(
        server.reloads(),
        1,
        "changes loaded from another writer are counted"
    );
    // An unknown token looks again (and finds nothing).
    let unknown = format!(
        "{TOKEN_PREFIX}{}",
        "x".repeat(TOKEN_LEN - TOKEN_PREFIX.len())
    );
    assert_eq!(server.authenticate(&unknown), None);
    // A second key made right after the first works at once too.
    let (second, token2) = cli.create("acme", Role::Ingest, None).unwrap();
    assert_eq!(server.authenticate(token2.expose()), Some(second));
    // A flood of random tokens: after UNKNOWN_TOKEN_LOOKS looks, none until the window ends.
    let looks = (0..10 * UNKNOWN_TOKEN_LOOKS)
        .take_while(|_| server.may_recheck())
        .count() as u32;
    assert!(looks < UNKNOWN_TOKEN_LOOKS, "{looks} looks in one window");
    assert!(!server.may_recheck());
    std::thread::sleep(UNKNOWN_TOKEN_RECHECK);
    assert!(server.may_recheck());
    // A look whose read fails (a damaged file) uses up its window: no re-reads in a loop.
    std::thread::sleep(UNKNOWN_TOKEN_RECHECK);
    std::fs::write(dir.path().join(KEYS_FILE), b"{ damaged").unwrap();
    assert_eq!(server.authenticate(&unknown), None);
    assert!(!server.may_recheck(), "no more looks until the window ends");
    assert_eq!(
        server.authenticate(token2.expose()).map(|k| k.role),
        Some(Role::Ingest),
        "the keys loaded before stay in use"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(32)
        ))]

        /// A real keys file with bytes flipped, cut or inserted: the store opens (and every
        /// key it lists still authenticates only with its own token), or refuses naming the
        /// file, which it never rewrites. Never a panic.
        #[test]
        fn prop_a_damaged_keys_file_opens_or_is_named(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let (dir, store) = temp_store();
            for (org, role) in [("acme", Role::OrgOwner), ("acme", Role::Ingest), ("globex", Role::Member)] {
                store.create(org, role, Some("k")).unwrap();
            }
            drop(store);
            let path = dir.path().join(KEYS_FILE);
            let mut bytes = fs::read(&path).unwrap();
            for (at, byte, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 if i < bytes.len() => bytes[i] ^= byte.max(1),
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, byte),
                }
            }
            fs::write(&path, &bytes).unwrap();
            match KeyStore::open(dir.path()) {
                Ok(store) => {
                    let _ = store.list(None);
                    assert!(store.authenticate("csk_not_a_token").is_none());
                }
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.contains(&path.display().to_string()), "{message}");
                    assert_eq!(fs::read(&path).unwrap(), bytes, "never reset");
                }
            }
        }
    }
}

/// Cluster mode's cache: another node's keys are taken in, a revocation wins over a live copy,
/// a live copy never un-revokes, and a key whose id or token hash clashes is skipped.
#[test]
fn merge_takes_the_clusters_keys_and_a_revocation_wins() {
    let (_a_dir, a) = temp_store();
    let (b_dir, b) = temp_store();
    let (made_on_a, token) = a.create("acme", Role::Ingest, Some("agent")).unwrap();
    let reloads = b.reloads();
    assert!(b.merge(&a.shared_keys()).unwrap());
    assert_eq!(
        b.reloads(),
        reloads + 1,
        "a merge that changed counts as a reload"
    );
    assert_eq!(b.authenticate(token.expose()), Some(made_on_a.clone()));
    assert!(!b.merge(&a.shared_keys()).unwrap(), "nothing new");

    a.revoke(&made_on_a.id).unwrap();
    let revoked = a.shared_keys();
    assert!(b.merge(&revoked).unwrap());
    assert_eq!(b.authenticate(token.expose()), None);
    // An older, live copy does not bring it back.
    let mut live = revoked.clone();
    live[0].info.revoked_at = None;
    assert!(!b.merge(&live).unwrap());
    assert_eq!(b.authenticate(token.expose()), None);

    // Same id, another hash; same hash, another id; a malformed hash: all skipped.
    let (other, _) = a.create("acme", Role::Member, None).unwrap();
    let mut clash = a
        .shared_keys()
        .into_iter()
        .find(|k| k.info.id == other.id)
        .unwrap();
    let mut same_id = clash.clone();
    same_id.info.id = made_on_a.id.clone();
    clash.token_sha256 = revoked[0].token_sha256.clone();
    let bad = SharedKey {
        token_sha256: "zz".into(),
        ..clash.clone()
    };
    assert!(!b.merge(&[same_id, clash, bad]).unwrap());
    assert_eq!(b.list(None).len(), 1);
    // What was merged is on disk: a store opened afresh (a restart) has it.
    let reopened = KeyStore::open(b_dir.path()).unwrap();
    assert_eq!(reopened.list(None), b.list(None));
}
