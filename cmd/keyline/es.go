package main

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/crn"
	"github.com/spf13/cobra"
)

// esCmd is `keyline es`, shaped like the Event Streams plugin `ibmcloud es`:
// topics and consumer groups of one deployment through its admin REST API.
type esCmd struct {
	*cli
	instance string
	json     bool
}

func newESCmd(c *cli) *cobra.Command {
	e := &esCmd{cli: c}
	cmd := &cobra.Command{Use: "es", Short: "Event Streams: topics and consumer groups of a deployment"}
	cmd.PersistentFlags().StringVarP(&e.instance, "instance", "i", "", "Event Streams instance name, GUID or CRN (default: the one 'keyline es init' chose, or ES_INSTANCE)")
	cmd.PersistentFlags().BoolVar(&e.json, "json", false, "print JSON (as --output json)")
	cmd.AddCommand(e.initCmd(), e.topicsCmd(), e.topicCmd(), e.topicCreateCmd(), e.topicUpdateCmd(), e.topicPartitionsSetCmd(),
		e.topicDeleteCmd(), e.groupsCmd(), e.groupCmd(), e.groupDeleteCmd(), e.groupResetCmd())
	return cmd
}

func (e *esCmd) jsonOut() bool { return e.json || e.output == "json" }

// admin resolves the instance (-i, ES_INSTANCE, or what es init saved) to
// its admin API.
func (e *esCmd) admin(cmd *cobra.Command) (*client.EventStreamsAdmin, string, error) {
	ref := firstNonEmpty(e.instance, os.Getenv("ES_INSTANCE"), loadConfig().ESInstance)
	if ref == "" {
		return nil, "", usageError{errorf("no Event Streams instance is chosen: run 'keyline es init -i NAME' or pass -i NAME|GUID|CRN")}
	}
	cl := e.client()
	in, err := e.eventStreams(cmd, cl, ref)
	if err != nil {
		return nil, "", err
	}
	return cl.Admin(str(in, "guid")), firstNonEmpty(str(in, "name"), ref), nil
}

// eventStreams resolves ref to an instance, which must be Event Streams.
func (e *esCmd) eventStreams(cmd *cobra.Command, cl *client.Client, ref string) (map[string]any, error) {
	in, err := e.cli.instance(cmd, cl, ref)
	if err != nil {
		return nil, err
	}
	if c, err := crn.Parse(str(in, "crn")); err != nil || c.ServiceName != "messagehub" {
		return nil, usageError{fmt.Errorf("instance %s is a %s instance, not Event Streams", ref, c.ServiceName)}
	}
	return in, nil
}

func (e *esCmd) initCmd() *cobra.Command {
	return &cobra.Command{
		Use: "init -i NAME|GUID|CRN", Short: "Choose the Event Streams instance the other es commands use (remembered)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if e.instance == "" {
				return usageError{errorf("name the instance with -i NAME|GUID|CRN")}
			}
			in, err := e.eventStreams(cmd, e.client(), e.instance)
			if err != nil {
				return err
			}
			cfg := loadConfig()
			cfg.ESInstance = str(in, "guid")
			if err := saveConfig(cfg); err != nil {
				return err
			}
			e.ok("Event Streams instance %s (%s) is chosen.", str(in, "name"), str(in, "guid"))
			return nil
		},
	}
}

func (e *esCmd) topicsCmd() *cobra.Command {
	var filter string
	cmd := &cobra.Command{
		Use: "topics [--filter GLOB]", Short: "List topics", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _, err := e.admin(cmd)
			if err != nil {
				return err
			}
			topics, err := a.Topics(ctxOf(cmd), filter)
			if err != nil {
				return err
			}
			if e.jsonOut() {
				return e.printJSON(topics)
			}
			var rows [][]string
			for _, t := range topics {
				rows = append(rows, []string{t.Name, strconv.Itoa(int(t.Partitions)), strconv.Itoa(int(t.ReplicationFactor)), t.CleanupPolicy, strconv.FormatInt(t.RetentionMs, 10)})
			}
			e.table([]string{"Topic name", "Partitions", "Replicas", "Cleanup policy", "Retention ms"}, rows)
			return nil
		},
	}
	cmd.Flags().StringVar(&filter, "filter", "", "only topics whose names match this glob (a*, *log)")
	return cmd
}

// notFound says which topic or group is missing, keeping the 404 (exit 3).
func notFound(err error, what, name, instance string) error {
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status == 404 {
		return fmt.Errorf("%s %q does not exist in Event Streams instance %s: %w", what, name, instance, err)
	}
	return err
}

func (e *esCmd) topicCmd() *cobra.Command {
	return &cobra.Command{
		Use: "topic NAME", Short: "Show a topic: partitions, replicas and configs", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, inst, err := e.admin(cmd)
			if err != nil {
				return err
			}
			t, err := a.Topic(ctxOf(cmd), args[0])
			if err != nil {
				return notFound(err, "topic", args[0], inst)
			}
			if e.jsonOut() {
				return e.printJSON(t)
			}
			e.printTopic(t)
			return nil
		},
	}
}

func (e *esCmd) printTopic(t *client.Topic) {
	e.fields([2]string{"Topic name", t.Name}, [2]string{"Topic ID", t.ID}, [2]string{"Partitions", strconv.Itoa(int(t.Partitions))},
		[2]string{"Replication factor", strconv.Itoa(int(t.ReplicationFactor))})
	fmt.Fprintln(e.out, "\nPartition details:")
	var rows [][]string
	for _, r := range t.ReplicaAssignments {
		var reps []string
		for _, b := range r.Brokers.Replicas {
			reps = append(reps, strconv.Itoa(int(b)))
		}
		rows = append(rows, []string{strconv.Itoa(int(r.ID)), strings.Join(reps, ",")})
	}
	e.table([]string{"Partition", "Replicas"}, rows)
	fmt.Fprintln(e.out, "\nConfigs:")
	rows = nil
	for _, k := range slices.Sorted(maps.Keys(t.Configs)) {
		rows = append(rows, []string{k, t.Configs[k]})
	}
	e.table([]string{"Name", "Value"}, rows)
}

// configFlags reads repeated --config NAME=VALUE.
func configFlags(kvs []string) ([]client.TopicConfig, error) {
	var out []client.TopicConfig
	for _, kv := range kvs {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, usageError{fmt.Errorf("--config %s is not NAME=VALUE (for example retention.ms=86400000)", kv)}
		}
		out = append(out, client.TopicConfig{Name: strings.TrimSpace(name), Value: value})
	}
	return out, nil
}

func (e *esCmd) topicCreateCmd() *cobra.Command {
	var name string
	var partitions int32
	var configs []string
	cmd := &cobra.Command{
		Use: "topic-create --name NAME [--partitions N] [--config NAME=VALUE ...]", Short: "Create a topic", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := named(name, args, "name")
			if err != nil {
				return err
			}
			if partitions < 1 {
				return usageError{fmt.Errorf("--partitions %d: a topic needs at least one partition", partitions)}
			}
			cs, err := configFlags(configs)
			if err != nil {
				return err
			}
			a, inst, err := e.admin(cmd)
			if err != nil {
				return err
			}
			t, err := a.CreateTopic(ctxOf(cmd), name, partitions, cs)
			if err != nil {
				return err
			}
			if e.jsonOut() {
				return e.printJSON(t)
			}
			e.ok("Topic %s was created in %s with %d partitions.", t.Name, inst, t.Partitions)
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "topic name")
	cmd.Flags().Int32VarP(&partitions, "partitions", "p", 1, "number of partitions")
	cmd.Flags().StringArrayVarP(&configs, "config", "c", nil, "a config NAME=VALUE (repeatable): cleanup.policy, retention.ms, retention.bytes, segment.bytes, segment.ms, max.message.bytes, ...")
	return cmd
}

func (e *esCmd) topicUpdateCmd() *cobra.Command {
	var name string
	var configs, defaults []string
	cmd := &cobra.Command{
		Use: "topic-update --name NAME [--config NAME=VALUE ...] [--default NAME ...]", Short: "Change a topic's configs, or reset them to their defaults", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := named(name, args, "name")
			if err != nil {
				return err
			}
			cs, err := configFlags(configs)
			if err != nil {
				return err
			}
			for _, d := range defaults {
				cs = append(cs, client.TopicConfig{Name: strings.TrimSpace(d), Reset: true})
			}
			if len(cs) == 0 {
				return usageError{errorf("say what to change: --config NAME=VALUE or --default NAME")}
			}
			return e.update(cmd, name, 0, cs)
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "topic name")
	cmd.Flags().StringArrayVarP(&configs, "config", "c", nil, "a config to set, NAME=VALUE (repeatable)")
	cmd.Flags().StringArrayVarP(&defaults, "default", "d", nil, "a config to reset to its default, NAME (repeatable)")
	return cmd
}

func (e *esCmd) topicPartitionsSetCmd() *cobra.Command {
	var name string
	var partitions int32
	cmd := &cobra.Command{
		Use: "topic-partitions-set --name NAME --partitions N", Short: "Raise a topic's partition count", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && name == "" {
				name = args[0]
			}
			if name == "" || partitions < 1 {
				return usageError{errorf("give the topic and its new total partition count: --name NAME --partitions N")}
			}
			return e.update(cmd, name, partitions, nil)
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "topic name")
	cmd.Flags().Int32VarP(&partitions, "partitions", "p", 0, "the new total number of partitions (only more than now)")
	return cmd
}

func (e *esCmd) update(cmd *cobra.Command, name string, partitions int32, cs []client.TopicConfig) error {
	a, inst, err := e.admin(cmd)
	if err != nil {
		return err
	}
	t, err := a.UpdateTopic(ctxOf(cmd), name, partitions, cs)
	if err != nil {
		return notFound(err, "topic", name, inst)
	}
	if e.jsonOut() {
		return e.printJSON(t)
	}
	e.ok("Topic %s was updated.", t.Name)
	return nil
}

func (e *esCmd) topicDeleteCmd() *cobra.Command {
	return e.deleteCmd("topic-delete --name NAME [-f]", "Delete a topic and all its records", "name", "n", "topic",
		"Delete topic %s of %s and all its records? This cannot be undone.", "Topic %s was deleted.",
		func(cmd *cobra.Command, a *client.EventStreamsAdmin, name string) error {
			_, err := a.Topic(ctxOf(cmd), name)
			return err
		},
		func(cmd *cobra.Command, a *client.EventStreamsAdmin, name string) error {
			return a.DeleteTopic(ctxOf(cmd), name)
		})
}

// deleteCmd is a destructive es command: it checks that the named thing
// exists (exit 3 if not), asks (confirm.go), then deletes it.
func (e *esCmd) deleteCmd(use, short, flag, shorthand, noun, question, done string,
	exists, del func(*cobra.Command, *client.EventStreamsAdmin, string) error) *cobra.Command {
	var name string
	var force bool
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := named(name, args, flag)
			if err != nil {
				return err
			}
			a, inst, err := e.admin(cmd)
			if err != nil {
				return err
			}
			if err := exists(cmd, a, name); err != nil {
				return notFound(err, noun, name, inst)
			}
			if err := e.confirm(force, fmt.Sprintf(question, name, inst)); err != nil {
				return err
			}
			if err := del(cmd, a, name); err != nil {
				return notFound(err, noun, name, inst)
			}
			e.ok(done, name)
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, flag, shorthand, "", noun+" name")
	forceFlag(cmd, &force)
	return cmd
}

// named is the flag's value, or else the one argument ibmcloud es also
// accepts in its place.
func named(flagValue string, args []string, flag string) (string, error) {
	if flagValue == "" && len(args) == 1 {
		flagValue = args[0]
	}
	if flagValue == "" {
		return "", usageError{fmt.Errorf("give the name with --%s", flag)}
	}
	return flagValue, nil
}

func (e *esCmd) groupsCmd() *cobra.Command {
	return &cobra.Command{
		Use: "groups", Short: "List consumer groups", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, _, err := e.admin(cmd)
			if err != nil {
				return err
			}
			groups, err := a.Groups(ctxOf(cmd))
			if err != nil {
				return err
			}
			if e.jsonOut() {
				return e.printJSON(groups)
			}
			var rows [][]string
			for _, g := range groups {
				rows = append(rows, []string{g.GroupID, g.State, strconv.Itoa(g.Members)})
			}
			e.table([]string{"Group ID", "State", "Members"}, rows)
			return nil
		},
	}
}

func (e *esCmd) groupCmd() *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use: "group --group GROUP", Short: "Show a consumer group: members and lag per partition", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			group, err := named(group, args, "group")
			if err != nil {
				return err
			}
			a, inst, err := e.admin(cmd)
			if err != nil {
				return err
			}
			g, err := a.Group(ctxOf(cmd), group)
			if err != nil {
				return notFound(err, "consumer group", group, inst)
			}
			if e.jsonOut() {
				return e.printJSON(g)
			}
			e.fields([2]string{"Group ID", g.GroupID}, [2]string{"State", g.State})
			fmt.Fprintln(e.out, "\nMembers:")
			var rows [][]string
			for _, m := range g.Members {
				var parts []string
				for _, p := range m.Partitions {
					parts = append(parts, fmt.Sprintf("%s/%d", p.Topic, p.Partition))
				}
				rows = append(rows, []string{m.ConsumerID, m.ClientID, m.Host, strings.Join(parts, ",")})
			}
			e.table([]string{"Consumer ID", "Client ID", "Host", "Partitions"}, rows)
			fmt.Fprintln(e.out, "\nOffsets:")
			rows = nil
			for _, o := range g.Offsets {
				rows = append(rows, []string{o.Topic, strconv.Itoa(int(o.Partition)), strconv.FormatInt(o.CurrentOffset, 10),
					strconv.FormatInt(o.EndOffset, 10), strconv.FormatInt(o.Lag, 10)})
			}
			e.table([]string{"Topic", "Partition", "Current offset", "End offset", "Offset lag"}, rows)
			return nil
		},
	}
	cmd.Flags().StringVarP(&group, "group", "g", "", "consumer group ID")
	return cmd
}

func (e *esCmd) groupDeleteCmd() *cobra.Command {
	return e.deleteCmd("group-delete --group GROUP [-f]", "Delete a consumer group without members, with its committed offsets", "group", "g", "consumer group",
		"Delete consumer group %s of %s and its committed offsets?", "Consumer group %s was deleted.",
		func(cmd *cobra.Command, a *client.EventStreamsAdmin, name string) error {
			_, err := a.Group(ctxOf(cmd), name)
			return err
		},
		func(cmd *cobra.Command, a *client.EventStreamsAdmin, name string) error {
			return a.DeleteGroup(ctxOf(cmd), name)
		})
}

func (e *esCmd) groupResetCmd() *cobra.Command {
	var group, topic, mode, value string
	var execute bool
	cmd := &cobra.Command{
		Use:   "group-reset --group GROUP --topic TOPIC --mode earliest|latest|datetime|offset [--value V] [--execute]",
		Short: "Move a consumer group's offsets on a topic (shows the new offsets; --execute applies them)",
		Long: `Move a consumer group's committed offsets on a topic: to the earliest or latest offset, to the
first record at or after a time (--mode datetime --value 2026-12-01T10:00:00Z, or milliseconds since
the epoch), or to an offset (--mode offset --value N). Without --execute nothing changes: the new
offsets are shown. The group must have no members: stop its consumers first.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			group, err := named(group, args, "group")
			if err != nil {
				return err
			}
			if topic == "" || mode == "" {
				return usageError{errorf("give the topic and the mode: --topic TOPIC --mode earliest|latest|datetime|offset")}
			}
			a, inst, err := e.admin(cmd)
			if err != nil {
				return err
			}
			moved, err := a.ResetGroup(ctxOf(cmd), group, topic, mode, value, execute)
			if err != nil {
				return notFound(err, "topic", topic, inst)
			}
			if e.jsonOut() {
				return e.printJSON(moved)
			}
			if execute {
				e.ok("The offsets of consumer group %s on %s were reset.", group, topic)
			} else {
				fmt.Fprintln(e.out, "Nothing was changed: these are the offsets --execute would set.")
			}
			var rows [][]string
			for _, m := range moved {
				rows = append(rows, []string{m.Topic, strconv.Itoa(int(m.Partition)), strconv.FormatInt(m.CurrentOffset, 10), strconv.FormatInt(m.NewOffset, 10)})
			}
			e.table([]string{"Topic", "Partition", "Current offset", "New offset"}, rows)
			return nil
		},
	}
	cmd.Flags().StringVarP(&group, "group", "g", "", "consumer group ID")
	cmd.Flags().StringVarP(&topic, "topic", "t", "", "topic whose offsets move")
	cmd.Flags().StringVar(&mode, "mode", "", "earliest, latest, datetime or offset")
	cmd.Flags().StringVar(&value, "value", "", "the time (datetime) or the offset (offset)")
	cmd.Flags().BoolVar(&execute, "execute", false, "apply the reset (without it, only show it)")
	return cmd
}
