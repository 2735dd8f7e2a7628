package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/nuse-project/nuse/daemon/ctlclient"
	"github.com/nuse-project/nuse/daemon/usock"
)

func init() {
	register("stats", "show sessions and sockets carried by NUSE", runStats)
}

func runStats(args []string) int {
	fs := flag.NewFlagSet("nuse stats", flag.ContinueOnError)
	sock := fs.String("sock", defaultSock(), "daemon control socket")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *asJSON {
		b, err := ctlclient.StatsJSON(*sock)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nuse stats:", err)
			return 1
		}
		os.Stdout.Write(append(b, '\n'))
		return 0
	}
	st, err := ctlclient.Stats(*sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nuse stats:", err)
		return 1
	}
	printStats(os.Stdout, st)
	return 0
}

func printStats(out io.Writer, st *usock.Stats) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	if len(st.Engines) <= 1 {
		fmt.Fprintf(w, "engine %s: %s sent, %s received through NUSE sockets\n", st.Engine, size(st.TxBytes), size(st.RxBytes))
	} else {
		fmt.Fprintf(w, "%s sent, %s received through NUSE sockets; by engine:\n", size(st.TxBytes), size(st.RxBytes))
		fmt.Fprintln(w, "ENGINE\tSOCKETS\tSENT\tRECEIVED\t")
		for _, e := range st.Engines {
			name := e.Name
			if e.Default {
				name += " (default)"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t\n", name, e.Sockets, size(e.TxBytes), size(e.RxBytes))
		}
	}
	show := func(title string, ss []usock.SessionStats) {
		if len(ss) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n", title)
		fmt.Fprintln(w, "SESSION\tPID\tPROGRAM\tSOCKETS\tSENT\tRECEIVED\tSHM\tWAKES/LAZY\tSTATUS\t")
		for _, s := range ss {
			status := "running"
			if s.Ended != "" {
				status = s.Ended
			}
			shm := "-" // an ended session holds none
			if s.Ended == "" {
				shm = size(s.Shm)
			}
			fmt.Fprintf(w, "%d\t%d\t%s\t%d\t%s\t%s\t%s\t%d/%d\t%s\t\n", s.ID, s.Pid, s.Comm, len(s.Sockets), size(s.TxBytes), size(s.RxBytes), shm,
				s.Wakes, s.LazySkipped, status)
			if len(s.Sockets) == 0 {
				continue
			}
			fmt.Fprintln(w, "  SLOT\tPROTO\tENGINE\tSTATE\tLOCAL\tREMOTE\tSENT\tRECEIVED\tRING TX/RX\tSEGS OUT/IN\tRETRANS\t")
			for _, so := range s.Sockets {
				eng := so.Engine
				if eng == "" {
					eng = st.Engine // a daemon from before engines were named per socket
				}
				fmt.Fprintf(w, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s/%s\t%d/%d\t%d\t\n", so.Slot, so.Family, eng, so.State, so.Local, so.Remote,
					size(so.TxBytes), size(so.RxBytes), size(so.TxQueued), size(so.RxQueued), so.SegsOut, so.SegsIn, so.Retransmits)
			}
		}
	}
	show("live sessions:", st.Sessions)
	if st.Others > 0 {
		fmt.Fprintf(w, "\n%d sessions of other users not shown\n", st.Others)
	}
	show("ended sessions (most recent):", st.Ended)
	if len(st.Relays) > 0 {
		fmt.Fprintln(w, "\nrelayed sockets (handed to another program or process; bytes since):")
		fmt.Fprintln(w, "UID\tPROTO\tENGINE\tLOCAL\tREMOTE\tSENT\tRECEIVED\tSINCE\t")
		for _, r := range st.Relays {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Uid, r.Family, r.Engine, r.Local, r.Remote,
				size(r.TxBytes), size(r.RxBytes), r.Since.Format("15:04:05"))
		}
	}
	if len(st.Net) > 0 {
		fmt.Fprintln(w, "\nengine interfaces (packets the engine moved, all sockets together):")
		fmt.Fprintln(w, "IFACE\tRX PACKETS\tRX\tTX PACKETS\tTX\tRX MALFORMED\tTX DROPPED\tACKS HELD\tREPLACED\tEXPIRED\tFLUSHED\tLATE\t")
		for _, n := range st.Net {
			fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", n.Name, n.RxPackets, size(n.RxBytes), n.TxPackets, size(n.TxBytes), n.RxMalformed, n.TxDropped,
				n.AcksHeld, n.AcksReplaced, n.AcksExpired, n.AcksFlushed, n.AcksLate)
		}
	}
	if tcp := tcpEngines(st.Engines); len(tcp) > 0 {
		fmt.Fprintln(w, "\nengine TCP counters (all sockets, closed ones too):")
		fmt.Fprintln(w, "ENGINE\tESTABLISHED\tOPENS ACTIVE/PASSIVE\tLISTEN DROPS\tRESETS OUT/IN\tSEGS OUT/IN\tRETRANS\tTLP\tRTO\tSPURIOUS\t")
		for _, e := range tcp {
			t := e.TCP
			fmt.Fprintf(w, "%s\t%d\t%d/%d\t%d\t%d/%d\t%d/%d\t%d\t%d\t%d\t%d\t\n", e.Name, t.Established, t.ActiveOpens, t.PassiveOpens,
				t.ListenDrops, t.ResetsSent, t.ResetsReceived, t.SegsOut, t.SegsIn, t.Retransmits, t.TailProbes, t.Timeouts, t.Spurious)
		}
	}
	if len(st.UC) > 0 {
		fmt.Fprintln(w, "\nuc proxy sessions (programs posting RDMA verbs through the daemon):")
		fmt.Fprintln(w, "PID\tDEVICE\tQPS\tPOSTED\tCOMPLETED\tDIRECT\tANSWERED\tSINCE\t")
		for _, u := range st.UC {
			fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t\n", u.Pid, u.Device, u.QPs, u.Posted, u.Completed, u.Direct, u.Answered, u.Since.Format("15:04:05"))
		}
	}
	w.Flush()
}

// tcpEngines are the engines with TCP counters of their own.
func tcpEngines(es []usock.EngineStats) []usock.EngineStats {
	var out []usock.EngineStats
	for _, e := range es {
		if e.TCP != nil {
			out = append(out, e)
		}
	}
	return out
}

// size prints a byte count the way people read it.
func size(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
