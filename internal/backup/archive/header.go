package archive

import "io"

// ReadHeader reads a backup's plain header only: which key wrapped its DEK.
func ReadHeader(src io.Reader) (Header, error) {
	h, _, err := readHeader("backup/archive.ReadHeader", src)
	return h, err
}
