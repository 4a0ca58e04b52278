//! Stop strings over streamed text.

/// Adds `delta` to the held-back text and returns (what can be shown now, whether a stop
/// string was found). Text that could still grow into a stop string is held back; at a
/// stop string everything from it on is dropped.
pub(super) fn apply_stop(pending: &mut String, delta: &str, stops: &[String], flush: bool) -> (String, bool) {
    pending.push_str(delta);
    if let Some(cut) = stops.iter().filter_map(|s| pending.find(s.as_str())).min() {
        let out = pending[..cut].to_string();
        pending.clear();
        return (out, true);
    }
    if flush {
        return (std::mem::take(pending), false);
    }
    // Keep the longest suffix of `pending` that is a proper prefix of some stop string.
    let mut keep = 0;
    for s in stops {
        for (i, _) in pending.char_indices() {
            let tail = &pending[i..];
            if tail.len() > keep && s.starts_with(tail) {
                keep = tail.len();
            }
        }
    }
    let split = pending.len() - keep;
    let out = pending[..split].to_string();
    pending.drain(..split);
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::apply_stop;

    #[test]
    fn stop_strings_are_cut_even_across_deltas() {
        let stops = vec!["END".to_string()];
        let mut p = String::new();
        assert_eq!(apply_stop(&mut p, "hello E", &stops, false), ("hello ".into(), false));
        assert_eq!(apply_stop(&mut p, "N", &stops, false), ("".into(), false));
        assert_eq!(apply_stop(&mut p, "D and more", &stops, false), ("".into(), true));
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_be_a_stop() {
        let stops = vec!["END".to_string()];
        let mut p = String::new();
        assert_eq!(apply_stop(&mut p, "E", &stops, false), ("".into(), false));
        assert_eq!(apply_stop(&mut p, "x", &stops, false), ("Ex".into(), false));
        assert_eq!(apply_stop(&mut p, "üE", &stops, true), ("üE".into(), false));
    }
}
