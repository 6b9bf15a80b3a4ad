package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// errDeclined is what a destructive command returns when the person at the
// terminal answers no: nothing was changed.
var errDeclined = errors.New("nothing was changed: the confirmation was declined")

// forceFlag adds -f/--force, which means one thing on every command that has
// it: do not ask for confirmation. It never makes a command do more.
func forceFlag(cmd *cobra.Command, force *bool) {
	cmd.Flags().BoolVarP(force, "force", "f", false, "do not ask for confirmation (needed when stdin is not a terminal)")
}

// confirm asks "question [y/N]" on the terminal unless force is set. When
// stdin is not a terminal nobody can answer, so it refuses (a usage error)
// rather than going ahead.
func (c *cli) confirm(force bool, question string) error {
	if force {
		return nil
	}
	f, ok := c.in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return usageError{fmt.Errorf("%s\nstdin is not a terminal, so nobody can confirm: pass -f (--force) to go ahead without asking", question)}
	}
	fmt.Fprintf(c.errOut, "%s [y/N] ", question)
	line, err := bufio.NewReader(c.in).ReadString('\n')
	if err != nil && err != io.EOF {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errDeclined
}
