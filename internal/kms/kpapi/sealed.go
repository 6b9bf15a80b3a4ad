package kpapi

import "net/http"

// WriteError writes err in Key Protect's error format, for answers made
// outside this package (a sealed server's 503).
func WriteError(w http.ResponseWriter, phrase string, err error) { writeError(w, phrase, err) }
