use super::*;

fn detector(target: Side, policy: Policy) -> Detector {
    Detector::new(ConflictOptions {
        slot: "bs".into(),
        direction: if target == Side::Green {
            "forward"
        } else {
            "reverse"
        },
        target,
        own_origin_prefix: if target == Side::Green {
            "blueshift_bs_".into()
        } else {
            "blueshift_bs_r".into()
        },
        policies: Arc::new(Policies {
            default: policy,
            tables: BTreeMap::from([("public.s".to_owned(), Policy::Skip)]),
        }),
        since: Arc::new(AtomicI64::new(1_000)),
    })
}

fn local(ts: Option<i64>, origin: Option<&str>, roident: Option<i64>) -> Local {
    Local {
        tableoid: 1,
        ctid: "(0,1)".into(),
        json: "{}".into(),
        commit_ts: ts,
        origin: origin.map(str::to_owned),
        roident,
    }
}

fn remote(unix_micros: i64) -> Remote<'static> {
    Remote {
        commit_lsn: Lsn(1),
        commit_time: PgTimestamp(unix_micros - PG_EPOCH_UNIX_MICROS),
        origin: None,
    }
}

#[test]
fn policies_parse_and_name_the_choices() {
    for p in Policy::ALL {
        assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
    }
    let err = "lww".parse::<Policy>().unwrap_err();
    assert!(err.contains("last-writer-wins, blue-wins"), "{err}");
    assert_eq!(Policies::default().of("public.t"), Policy::Stop);
}

#[test]
fn another_origin_is_a_local_writer_or_anyone_but_this_direction() {
    let d = detector(Side::Green, Policy::Stop);
    assert!(d.origin_differs(&local(Some(2_000), None, Some(0))));
    assert!(!d.origin_differs(&local(Some(2_000), Some("blueshift_bs_1"), Some(3))));
    assert!(d.origin_differs(&local(Some(2_000), Some("blueshift_bs_r1"), Some(3))));
    assert!(d.origin_differs(&local(Some(2_000), Some("pg_16400"), Some(3))));
    // Before two-way mode began, or unknown: no race possible.
    assert!(!d.origin_differs(&local(Some(999), None, Some(0))));
    assert!(!d.origin_differs(&local(None, None, None)));
    let r = detector(Side::Blue, Policy::Stop);
    assert!(!r.origin_differs(&local(Some(2_000), Some("blueshift_bs_r12"), Some(3))));
    assert!(r.origin_differs(&local(Some(2_000), Some("blueshift_bs_1"), Some(3))));
}

#[test]
fn last_writer_wins_by_commit_time_ties_to_blue_and_deletes_win() {
    let forward = detector(Side::Green, Policy::LastWriterWins);
    let reverse = detector(Side::Blue, Policy::LastWriterWins);
    let older = [local(Some(5_000), None, Some(0))];
    for d in [&forward, &reverse] {
        assert_eq!(
            d.resolve(Kind::UpdateOriginDiffers, "public.t", remote(6_000), &older),
            Resolution::ApplyRemote
        );
        assert_eq!(
            d.resolve(Kind::InsertExists, "public.t", remote(4_000), &older),
            Resolution::KeepLocal
        );
        assert_eq!(
            d.resolve(Kind::UpdateMissing, "public.t", remote(9_000), &[]),
            Resolution::KeepLocal
        );
        assert_eq!(
            d.resolve(Kind::DeleteOriginDiffers, "public.t", remote(1), &older),
            Resolution::ApplyRemote
        );
        assert_eq!(
            d.resolve(Kind::InsertExists, "public.s", remote(9_000), &older),
            Resolution::KeepLocal,
            "the table's own policy"
        );
    }
    // A tie: blue's change wins on both sides.
    assert_eq!(
        forward.resolve(Kind::InsertExists, "public.t", remote(5_000), &older),
        Resolution::ApplyRemote
    );
    assert_eq!(
        reverse.resolve(Kind::InsertExists, "public.t", remote(5_000), &older),
        Resolution::KeepLocal
    );
}

#[test]
fn a_side_wins_on_both_sides() {
    let rows = [local(Some(5_000), None, Some(0))];
    for (policy, forward, reverse) in [
        (
            Policy::BlueWins,
            Resolution::ApplyRemote,
            Resolution::KeepLocal,
        ),
        (
            Policy::GreenWins,
            Resolution::KeepLocal,
            Resolution::ApplyRemote,
        ),
        (Policy::Skip, Resolution::KeepLocal, Resolution::KeepLocal),
        (Policy::Stop, Resolution::Stop, Resolution::Stop),
    ] {
        let f = detector(Side::Green, policy);
        let r = detector(Side::Blue, policy);
        assert_eq!(
            f.resolve(Kind::UpdateExists, "public.t", remote(1), &rows),
            forward
        );
        assert_eq!(
            r.resolve(Kind::UpdateExists, "public.t", remote(1), &rows),
            reverse
        );
    }
}

#[test]
fn a_refused_collision_between_rows_says_why_and_what_to_do() {
    let stopped = |between_rows| {
        ApplyError::Conflict(Box::new(Stopped {
            kind: Kind::UpdateExists,
            table: "public.w".to_owned(),
            key: "(id)=(1)".to_owned(),
            direction: "forward",
            between_rows,
        }))
        .to_string()
    };
    let refused = stopped(true);
    assert!(
        refused.starts_with(
            "conflict update_exists on table \"public.w\", row (id)=(1) (forward direction): \
             the incoming change collides with another row"
        ) && refused.contains("last-writer-wins cannot make both sides converge"),
        "{refused}"
    );
    let policy = stopped(false);
    assert!(
        policy.contains("the conflict policy is \"stop\"") && policy.contains("--conflict-policy"),
        "{policy}"
    );
    assert!(same_columns(&[2, 0], &[0, 2]) && !same_columns(&[0], &[0, 2]));
}
