// Package broker is an Event Streams deployment's Kafka listener: the Kafka
// wire protocol (encoded only through franz-go's kmsg), SASL PLAIN, topics,
// idempotent produce, fetch, consumer groups and the admin REST API for
// topics, on top of a Storage that encrypts everything it keeps.
//
// Where things are:
//
//	broker.go     Config, New, Serve, Lock/Unlock/Close, access levels
//	conn.go       one connection: frames in, one request at a time, answers in
//	              order from a writer that waits for produced data to be durable
//	framing.go    size-prefixed frames, request headers, response framing
//	apis.go       advertised versions and the dispatch to handlers
//	NN_name.go    one file per API key, named as in franz-go's kfake
//	batch.go      record batch validation and offset stamping
//	partition.go  a partition's log and idempotent producers' sequence windows
//	producers.go  producer ids, never handed out twice
//	topics.go     the topic catalog (names live only in encrypted metadata)
//	groups.go     classic consumer groups and committed offsets
//	retention.go  periodic retention.ms / retention.bytes
//	quota.go      client quotas: byte rates per user and client id, throttle
//	              and mute (KIP-13, KIP-219), kept in the "quotas" record
//	admin.go      the Event Streams admin REST API for topics
//	storage.go    the Storage interface the encrypted log implements
//
// Storage keys never hold topic or group names: topics are stored under
// "topic/<id>", partitions as "<topic id hex>-<n>", groups under
// "group/<random id>", the next producer id under "producer-id/next".
package broker
