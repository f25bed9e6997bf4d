"""The user-error type. Anything a user can fix raises UserError; the CLI prints its one line, exits 2."""

import difflib
import signal


class UserError(Exception):
    """A mistake the user can fix: the message names the problem and what to do."""


def did_you_mean(word: str, choices: list) -> str:
    """' (did you mean X?)' for the closest choice, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(what: str, word: str, choices: list) -> UserError:
    """UserError for a name that is not among `choices`."""
    listed = ", ".join(sorted(str(c) for c in choices))
    return UserError(f"unknown {what} '{word}'{did_you_mean(word, choices)}; choose one of: {listed}")


class WorkerLost(Exception):
    """Another worker of a multi-worker run died (its process killed, its machine gone): this one stopped
    rather than wait for it; exits 75 (EX_TEMPFAIL: relaunching the workers continues the run)."""

    exit_code = 75


class Interrupted(Exception):
    """Training stopped by SIGTERM/SIGINT after saving a checkpoint; exits 128 + the signal number.
    `step` None: training had finished, and the test pass after it was stopped. `then` replaces the
    default advice (resume from the checkpoint)."""

    def __init__(self, signum, step, run_dir, steps_per_epoch=0, epochs=0, then=None):
        self.exit_code = 128 + signum
        if step is None:
            where = "in the test pass"
            then = then or f"the trained model is saved: `bigml train --resume {run_dir}` runs the test pass again"
        else:
            where = f"at step {step}"
            if steps_per_epoch and epochs:
                epoch, done = divmod(step, steps_per_epoch)
                where += (f" (epoch {epoch + 1}/{epochs}, {done / steps_per_epoch:.0%} done)" if done
                          else f" (after epoch {epoch}/{epochs})")
            then = then or f"checkpoint saved: resume with `bigml train --resume {run_dir}`"
        super().__init__(f"stopped by {signal.Signals(signum).name} (signal {signum}) {where}; {then}")
