//! Any body posted to a hook: a single CloudEvent or a batch. Decoding must
//! never panic, an accepted event must survive its own JSON, and the
//! one-pass reader must read exactly what the cloudevents crate reads (the
//! JSON alike but for the extensions' order, which the crate's hash map
//! sets).
#![no_main]

use converge_model::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let ours = Event::from_json(body);
    let reference = Event::from_json_through_crate(body);
    match (&ours, &reference) {
        (Ok(ours), Ok(reference)) => {
            let parsed = |json: &str| serde_json::from_str::<serde_json::Value>(json).unwrap();
            assert_eq!(parsed(&ours.json), parsed(&reference.json));
            let blank = |event: &Event| Event { json: String::new(), ..event.clone() };
            assert_eq!(blank(ours), blank(reference));
        }
        _ => assert_eq!(ours, reference),
    }
    if let Ok(event) = ours {
        let again = Event::from_json(event.json.as_bytes()).expect("an accepted event re-decodes");
        assert_eq!(again, event);
    }
    let _ = Event::batch_from_json(body);
});
