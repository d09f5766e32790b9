"""Outside review: secrets in the reprs of the rotation's state machine."""

from __future__ import annotations

from magicwan import new_psk
from magicwan.models.psk import PSKGenerateResult
from magicwan.rotation import machine
from tests.support.constants import TUNNEL


def test_the_state_machines_objects_never_show_a_psk_in_their_repr() -> None:
    # README ("How the engine keeps the promise") presents magicwan.rotation.machine:
    # TunnelRun, its events and effects, `step(rules, run, event) -> (run, effects)`.
    # They are what anyone debugging a rotation prints (a log line, a pytest assertion,
    # the simulation's failure report). TunnelRun.sending (the PSK a set sends),
    # Begin.psk and Deliver.psk are plain strings with attrs' default repr, so
    # repr(run), repr(Begin(...)) and repr(Deliver(...)) show the PSK in clear, while
    # every public model (PSKGenerateResult, Delivery, JournalRecord, Intent) hides it.
    # Expected: no repr of these objects contains the PSK.
    psk = new_psk()
    result = PSKGenerateResult(ipsec_tunnel_id=TUNNEL, psk=psk)
    shown = {
        "TunnelRun": repr(machine.TunnelRun(tunnel_id=TUNNEL, sending=psk)),
        "Begin": repr(machine.Begin(0.0, psk)),
        "Deliver": repr(machine.Deliver(psk, result)),
    }
    leaking = sorted(name for name, text in shown.items() if psk in text)
    assert not leaking, f"the repr of {', '.join(leaking)} shows the PSK"
