//! The SMP mesh: bounded, ordered per sender, back-pressure when full, doorbells wake.

use oxbow_runtime_real::shard::smp::mesh;

#[test]
fn messages_arrive_in_order_per_sender_and_full_queues_hand_back() {
    let mut endpoints = mesh::<u64>(3, 4).unwrap();
    let mut two = endpoints.pop().unwrap();
    let mut one = endpoints.pop().unwrap();
    let mut zero = endpoints.pop().unwrap();
    for i in 0..4 {
        zero.try_send(2, i).unwrap();
        one.try_send(2, 100 + i).unwrap();
    }
    assert_eq!(
        zero.try_send(2, 99),
        Err(99),
        "a full queue hands the message back"
    );
    assert_eq!(zero.free_slots(2), 0);
    zero.flush_wakeups();
    one.flush_wakeups();
    assert_eq!(two.doorbell().drain(), 2, "one ring per sender per flush");
    let mut got = Vec::new();
    assert_eq!(two.drain(usize::MAX, |from, m| got.push((from, m))), 8);
    let from_zero: Vec<u64> = got.iter().filter(|(f, _)| *f == 0).map(|(_, m)| *m).collect();
    let from_one: Vec<u64> = got.iter().filter(|(f, _)| *f == 1).map(|(_, m)| *m).collect();
    assert_eq!(from_zero, vec![0, 1, 2, 3]);
    assert_eq!(from_one, vec![100, 101, 102, 103]);
    assert_eq!(&got[..2], &[(0, 0), (1, 100)], "round robin across senders");
    assert!(!two.has_incoming());
    zero.try_send(2, 4).unwrap();
    assert!(two.has_incoming());
    assert_eq!(zero.try_send(7, 1), Err(1), "unknown shard");
    // A shard may send to itself.
    zero.try_send(0, 42).unwrap();
    let mut mine = Vec::new();
    zero.drain(10, |from, m| mine.push((from, m)));
    assert_eq!(mine, vec![(0, 42)]);
}

#[test]
fn two_threads_exchange_messages_without_loss_under_back_pressure() {
    const COUNT: u64 = 50_000;
    let endpoints = mesh::<u64>(2, 64).unwrap();
    let both_filled = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = endpoints
        .into_iter()
        .map(|mut endpoint| {
            let both_filled = both_filled.clone();
            std::thread::spawn(move || {
                let me = endpoint.shard();
                let peer = 1 - me;
                let (mut sent, mut next_expected, mut full) = (0u64, 0u64, 0u64);
                let mut filled_once = false;
                while sent < COUNT || next_expected < COUNT {
                    while sent < COUNT {
                        match endpoint.try_send(peer, sent) {
                            Ok(()) => sent += 1,
                            Err(_) => {
                                full += 1;
                                break;
                            }
                        }
                    }
                    // The first time, each side has sent until its queue refused before
                    // either drains: back-pressure is met whatever the scheduler does (a
                    // bounded queue must refuse the 65th message; an unbounded one
                    // would take them all).
                    if !filled_once {
                        both_filled.wait();
                        filled_once = true;
                    }
                    endpoint.flush_wakeups();
                    endpoint.drain(1024, |from, m| {
                        assert_eq!(from, peer);
                        assert_eq!(m, next_expected, "in order, none lost or duplicated");
                        next_expected += 1;
                    });
                    std::hint::spin_loop();
                }
                full
            })
        })
        .collect();
    for handle in handles {
        let full = handle.join().unwrap();
        assert!(
            full > 0,
            "a 64-slot queue fills under this load: back-pressure was exercised"
        );
    }
}
