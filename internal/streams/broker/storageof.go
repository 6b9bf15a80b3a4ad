package broker

// LogStore is a store whose Partition returns its own log type, as
// seglog's and objlog's do.
type LogStore[P PartitionLog] interface {
	GetMeta(key string) ([]byte, bool)
	PutMeta(key string, value []byte) error
	DeleteMeta(key string) error
	ListMeta(prefix string) map[string][]byte
	Partition(name string, create bool) (P, error)
	DropPartition(name string) error
}

// StorageOf is st as the broker's Storage.
func StorageOf[P PartitionLog](st LogStore[P]) Storage { return storageOf[P]{st} }

type storageOf[P PartitionLog] struct{ LogStore[P] }

// Partition returns a nil PartitionLog, not a typed nil, on error.
func (s storageOf[P]) Partition(name string, create bool) (PartitionLog, error) {
	p, err := s.LogStore.Partition(name, create)
	if err != nil {
		return nil, err
	}
	return p, nil
}
