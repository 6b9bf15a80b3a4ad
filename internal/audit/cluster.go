package audit

import "github.com/keyline/keyline/internal/cluster"

// topicEvents is the change feed's topic of committed events.
const topicEvents = "audit.events"

// JoinCluster wakes followers when another node sharing the database
// commits events, as a local commit does. Events get their seq under the
// writers' lock every node takes, so seq order is commit order and a
// follower reading "seq > last" skips none.
func (l *Log) JoinCluster(f *cluster.Feed) {
	f.Subscribe(topicEvents, func(string) { l.notify() })
	f.OnReset(l.notify)
}
