//! Any body posted to a hook: a single CloudEvent or a batch. Decoding must
//! never panic, and an accepted event must survive its own JSON.
#![no_main]

use converge_model::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(event) = Event::from_json(body) {
        let again = Event::from_json(event.json.as_bytes()).expect("an accepted event re-decodes");
        assert_eq!(again.id, event.id);
        assert_eq!(again.source, event.source);
    }
    let _ = Event::batch_from_json(body);
});
