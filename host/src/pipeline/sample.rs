//! Evaluating a sample of a route's answers (`routes.<m>.evaluate_sample`).

use super::Route;

impl Route {
    /// The evaluator that checks request `request_id`'s answers: the
    /// route's, for the sampled share of requests.
    pub fn evaluator_for(&self, request_id: &str) -> Option<&String> {
        self.evaluator
            .as_ref()
            .filter(|_| sampled(self.evaluate_sample, request_id))
    }
}

/// Whether request `request_id` is in a sample of `share` (0 to 1). The
/// draw is a hash of the id, so every attempt of one request (and a resumed
/// stream's legs) agree, and no random state is shared between requests.
fn sampled(share: f64, request_id: &str) -> bool {
    if share >= 1.0 {
        return true;
    }
    let h = request_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // Finished like SplitMix64, so ids that differ in one digit spread.
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let h = h ^ (h >> 31);
    // The top 53 bits as a fraction in [0, 1).
    ((h >> 11) as f64 / (1u64 << 53) as f64) < share
}

#[cfg(test)]
mod tests {
    use super::sampled;

    #[test]
    fn a_sample_is_a_stable_share_of_requests() {
        // Ids as the gateway makes them: a prefix and a counter.
        let ids: Vec<String> = (0..20_000).map(|i| format!("5f3a9c01-{i:012x}")).collect();
        let chosen = ids.iter().filter(|id| sampled(0.3, id)).count();
        assert!((5_600..6_400).contains(&chosen), "{chosen} of 20000");
        assert!(ids.iter().all(|id| sampled(0.3, id) == sampled(0.3, id)));
        assert!(ids.iter().all(|id| sampled(1.0, id)));
        assert!(!ids.iter().any(|id| sampled(0.0, id)));
    }
}
