package wrapper

import (
	"context"
	"fmt"
	"time"

	"recycler.dev/go-boot-wrapper/internal/attach"
	"recycler.dev/go-boot-wrapper/internal/boot"
	"recycler.dev/go-boot-wrapper/internal/recyclerpb"
	"recycler.dev/go-boot-wrapper/internal/supervisor"
)

// declineStandby answers a Standby that arrived while the slot is busy (a lease or another standby): the recycler
// offers a standby only to an idle slot, so this is a race with its own bookkeeping or a bug; nothing is started.
func (w *Wrapper) declineStandby(s *attach.Session, sb *recyclerpb.Standby, cur *leaseRun) {
	what, running := "a lease", cur.lease.Generation
	switch {
	case cur.next != nil:
		running = cur.next.GetGeneration()
	case cur.standby:
		what = "another standby"
	}
	msg := fmt.Sprintf("declined: slot %s is busy with %s of generation %d; a standby is offered only to an idle slot",
		w.cfg.SlotID, what, running)
	w.log.Warn("standby while the slot is busy", "generation", sb.GetGeneration(), "running_generation", running)
	w.sendStandbyEnded(s, &recyclerpb.StandbyEnded{Generation: sb.GetGeneration(), Message: msg})
}

// sendStandbyEnded sends se. It carries no cache state, so unlike LeaseEnded it needs no reportMu.
func (w *Wrapper) sendStandbyEnded(s *attach.Session, se *recyclerpb.StandbyEnded) {
	err := s.Send(&recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_StandbyEnded{StandbyEnded: se}})
	if err != nil {
		w.log.Warn("cannot report standby end", "generation", se.GetGeneration(), "error", err)
	}
}

// onStandby handles a Standby and returns the slot's run afterwards. An idle slot starts it. A Standby right behind
// the Exit that stops the slot's standby (or of a later generation than an unclaimed standby, which it replaces) is
// queued and started once that one is gone: the recycler replaces a standby this way when a new job's worker is to be
// started speculatively on the slot. Anything else is declined: a standby is offered only to an idle slot.
func (w *Wrapper) onStandby(s *attach.Session, cur *leaseRun, sb *recyclerpb.Standby) *leaseRun {
	gen := sb.GetGeneration()
	switch {
	case cur == nil:
		return w.startStandby(s, sb)
	case cur.standby && cur.waiting && gen > cur.lease.Generation:
		cur.waiting = false
		cur.stop(fmt.Sprintf("replaced by standby %d", gen))
		fallthrough
	case cur.standby && !cur.waiting && cur.next == nil && cur.nextStandby == nil && gen > cur.lease.Generation:
		w.log.Info("standby queued behind the standby being stopped", "generation", gen,
			"stopping_generation", cur.lease.Generation)
		cur.nextStandby = sb
		return cur
	default:
		w.declineStandby(s, sb, cur)
		return cur
	}
}

func (w *Wrapper) startStandby(s *attach.Session, sb *recyclerpb.Standby) *leaseRun {
	return w.startRun(s, boot.Lease{Generation: sb.GetGeneration(), WorkerID: sb.GetWorkerId(),
		Credential: sb.GetCredential(), JobName: sb.GetJobName(), Prepared: sb.GetPrepared()}, true)
}

// runStandby boots and starts a standby worker exactly as runLease would for Lease{generation, worker_id, credential,
// prepared}, from the prepared inputs and the local cache alone (boot.Booter.BootStandby: no call, no wait), and sends
// no WorkerStarted. Then, whichever comes first:
//   - a Lease adopts it (adoptReq): WorkerStarted at once, and the run goes on as that lease's (adopt);
//   - its worker exits on its own, or serve stops it (stopReq: an Exit of its generation, or a Lease that does not
//     adopt it): the worker's process group is killed (it has served nothing, so no grace period), its directory
//     deleted, and StandbyEnded left in r.standbyEnded for serve to send;
//   - the stream breaks or the wrapper stops (abortReq): the same, and nothing to report.
//
// A standby that cannot be booted (no prepared inputs, an artifact not held, a binary that cannot be executed) ends
// at once with StandbyEnded{"declined: ..."}. While its worker lives the standby is the slot's worker: the cache
// counts it as exposed (EndExposure only once it is gone), and nothing trims the cache (see leaseEnded).
func (w *Wrapper) runStandby(s *attach.Session, r *leaseRun) {
	gen := r.lease.Generation
	// Every line of the standby carries standby=true ahead of the generation, so that the benchmark's Breakdown, which
	// reads a lease's lines by their msg, slot and generation keys in that order, never takes the standby's boot
	// ("provisioned") for the lease's: the lease that adopts it logs its own lines, without "provisioned" (adopt).
	log := w.log.With("standby", true, "generation", gen, "worker_id", r.lease.PublicID())
	log.Info("standby", "job_name", r.lease.JobName)
	start := time.Now()
	defer w.cache.EndExposure() // runStandby returns only once no process of the standby (or of its lease) is alive
	ended := func(msg string) {
		select {
		case <-r.abortReq:
			return // the stream is gone or the wrapper is stopping: nobody to report to
		default:
		}
		log.Info("standby ended", "message", msg, "took", time.Since(start).Round(time.Millisecond))
		r.standbyEnded = &recyclerpb.StandbyEnded{Generation: gen, Message: msg}
	}

	// (1) Boot: local work only, nothing to wait for, so nothing to abort.
	bootLog := boot.NewLog(log) // never connected to Beam's logging service (BootStandby)
	prepared, err := w.booter.BootStandby(context.Background(), r.lease, bootLog)
	bootLog.Close()
	if err != nil {
		log.Info("standby declined", "error", err)
		// BootStandby removed what it created, but it cannot wait for a directory that resists deletion; this does.
		if w.removeLeaseDir(w.booter.LeaseDir(gen), r.abortReq, log) {
			ended("declined: " + err.Error())
		}
		return
	}
	select {
	case <-r.stopReq:
		if w.removeLeaseDir(prepared.Dir, r.abortReq, log) {
			ended(r.stopReason)
		}
		return
	case <-r.abortReq:
		w.removeLeaseDir(prepared.Dir, r.abortReq, log)
		return
	default: // an adoption that came during the boot is taken below, once the worker runs
	}

	// (2) Start the worker, and report nothing.
	proc, err := w.sup.Start(prepared.Spec)
	if err != nil {
		if w.removeLeaseDir(prepared.Dir, r.abortReq, log) {
			ended("declined: " + cannotExecute(err))
		}
		return
	}
	log.Info("standby started", "pid", proc.Pid())

	// (3) Wait for a Lease, or the end.
	why := ""
	select {
	case <-proc.Done():
	case <-r.stopReq:
		why = r.stopReason
	case <-r.abortReq:
	case <-r.adoptReq:
		select {
		case <-proc.Done(): // it died as the Lease came: that Lease boots a fresh worker after StandbyEnded (serve)
		default:
			r.adopted = true
			w.adopt(s, r, proc, prepared.Dir)
			return
		}
	}
	st := proc.Kill()
	if why == "" {
		why = exitMessage(st)
	}
	log.Info("standby worker stopped", "status", st.String())
	if w.removeLeaseDir(prepared.Dir, r.abortReq, log) {
		ended(why)
	}
}

// exitMessage is StandbyEnded.message for a worker that ended on its own.
func exitMessage(st supervisor.ExitStatus) string {
	if st.Signal != 0 {
		return "killed by " + st.SignalName()
	}
	return fmt.Sprintf("exited with code %d", st.Code)
}

// adopt makes the standby's running worker the worker of r.adoptLease: WorkerStarted at once (no boot, no call, no
// artifact work), then exactly a lease's life (supervise: Exit with the grace period, the worker exiting on its own,
// the directory wiped, LeaseEnded with the cache trimmed). It logs a lease's "lease" and "worker started" lines (the
// benchmark's Breakdown reads them; it takes the missing "provisioned" for an adopted lease's), "worker started" with
// adopted_standby=true and took, the time from the Lease's arrival to WorkerStarted sent.
func (w *Wrapper) adopt(s *attach.Session, r *leaseRun, proc *supervisor.Process, dir string) {
	gen := r.lease.Generation
	log := w.leaseLog(r.lease)
	log.Info("lease", "job_name", r.adoptLease.GetJobName(), "adopt_standby", true)
	err := s.Send(&recyclerpb.WrapperMessage{Kind: &recyclerpb.WrapperMessage_WorkerStarted{
		WorkerStarted: &recyclerpb.WorkerStarted{Generation: gen, Pid: int64(proc.Pid())}}})
	took := time.Since(r.adoptAt)
	if err != nil {
		log.Warn("cannot report worker start", "error", err)
	}
	// The generation is a lease now: its boot lines may reach Beam's logging service, as a booted lease's do.
	bootLog := boot.NewLog(log)
	bootLog.ConnectBeam(r.lease.Prepared.GetProvisionInfo().GetLoggingEndpoint().GetUrl(), r.lease.WorkerID)
	bootLog.Info("worker started", "pid", proc.Pid(), "adopted_standby", true, "took", took.Round(time.Microsecond))
	bootLog.Close()
	w.supervise(r, proc, dir, &recyclerpb.LeaseEnded{Generation: gen}, log, r.adoptAt)
}
