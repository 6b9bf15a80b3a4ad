package broker

import "time"

// runRetention applies retention.ms and retention.bytes of each topic whose
// cleanup.policy includes delete, periodically until the broker closes.
func (b *Broker) runRetention() { b.every(b.cfg.RetentionInterval, nil, b.applyRetention) }

// every runs fn each interval and whenever wake fires (a nil wake never
// does), until the broker closes.
func (b *Broker) every(interval time.Duration, wake <-chan struct{}, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
		case <-wake:
		}
		fn()
	}
}

// applyRetention runs one retention pass over every partition.
func (b *Broker) applyRetention() {
	now := b.clock.Now()
	for _, t := range b.topics.list() {
		s := t.settings.Load()
		ms, bytes := s.retentionMs, s.retentionBytes
		if !s.deletes || ms < 0 && bytes < 0 {
			continue
		}
		for _, p := range b.topics.partitions(t) {
			if err := p.log.Retain(now, ms, bytes); err != nil {
				b.log.Warn("retention failed", "topic_id", t.id.String(), "partition", p.index, "err", err)
			}
		}
	}
}
