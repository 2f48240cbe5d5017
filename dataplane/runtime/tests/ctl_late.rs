//! A command the worker answers too late is never taken for the answer to the next one: the
//! control thread gives up on a session listing (the worker is not polling yet), then publishes a
//! configuration, and gets the answer to the publication, not the listing's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{rig, services, Rig, RIP_B};
use rvs_core::config::Timeouts;
use rvs_dataplane::ctl::{mailbox, Cmd, Snapshot};

#[test]
fn a_late_answer_is_not_the_next_commands() {
    let Rig {
        eal: _eal,
        pool: _pool,
        rp: _rp,
        counters: _,
        worker,
    } = rig("late", 32);
    let (mut link, wctl) = mailbox(0).unwrap();
    let mut worker = worker.with_ctl(wctl);
    // The worker starts polling only once the first call has given up (no timing assumed).
    let (gave_up, first_done) = std::sync::mpsc::channel();
    let ctl = std::thread::spawn(move || {
        let listing = Box::new(Cmd::Sessions {
            start: 0,
            out: Vec::with_capacity(8),
            next: None,
        });
        let first = link.call(listing, Duration::from_millis(20));
        assert!(first.is_err(), "nobody polls yet: {first:?}");
        assert_eq!(link.late(), 1);
        gave_up.send(()).unwrap();
        let snap = Arc::new(Snapshot::new(
            2,
            services(RIP_B, 0),
            Timeouts::default(),
            vec![],
        ));
        let reply = link
            .call(
                Box::new(Cmd::Apply {
                    new: snap,
                    old: None,
                    built: None,
                    result: Ok(()),
                }),
                Duration::from_secs(5),
            )
            .expect("the worker answers");
        let late_left = link.late();
        (
            matches!(*reply, Cmd::Apply { result: Ok(()), .. }),
            late_left,
        )
    });
    // An Err here: the control thread panicked before giving up (its join below says why).
    if first_done.recv().is_err() {
        ctl.join().unwrap();
        unreachable!("the control thread ended without giving up");
    }
    worker.start();
    while !ctl.is_finished() {
        worker.poll_once();
        std::thread::sleep(Duration::from_micros(100));
    }
    let (applied, late_left) = ctl.join().unwrap();
    assert!(
        applied,
        "the answer to the publication, not the late listing's"
    );
    assert_eq!(late_left, 0, "the late answer was taken off and freed");
}
