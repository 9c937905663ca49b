"""RFC 3261 §8.1.3.4 against SIPp: one UAS answers our INVITE with 302 and a Contact naming a
second SIPp UAS on another port; we ACK the 302, send a new INVITE there (same Call-ID, CSeq
2), it answers, and we hang up. The CDR lists the redirect."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from sipstack.config import CoreConfig
from sipstack.dial import DialRequest, DialTarget
from sipstack.events import LegEnded, LegEvent, Redirected
from sipstack.transport import Transport
from tests.sipp.harness import LOOPBACK, Sipp, free_ports, requires_sipp
from tests.waiting import eventually
from workers.signaling.manager import LegManager, ManagerHooks
from workers.signaling.transports import TransportConfig

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(60), requires_sipp]


def test_a_302_is_followed_to_the_second_uas_which_answers(tmp_path: Path) -> None:
    first_port = free_ports(2)
    second_port = first_port + 1
    second_uri = f"sip:service@{LOOPBACK}:{second_port}"
    redirector = Sipp("uas_redirect_302.xml", first_port, "udp", tmp_path / "first",
                      keys={"redirect_uri": second_uri}).start()  # fmt: skip
    answerer = Sipp("uas_answer.xml", second_port, "udp", tmp_path / "second", keys={
        "adv_host": LOOPBACK, "adv_port": str(second_port), "adv_transport": "udp",
    }).start()  # fmt: skip
    events: list[LegEvent] = []
    ended: list[LegEnded] = []

    async def main() -> None:
        manager = LegManager(CoreConfig(), TransportConfig(bind_host=LOOPBACK),
                             ManagerHooks(on_event=events.append))  # fmt: skip
        await manager.start()
        try:
            call_id = await manager.dial(DialRequest(
                target=DialTarget(request_uri=f"sip:service@{LOOPBACK}:{first_port}",
                                  signaling_addr=f"{LOOPBACK}:{first_port}",
                                  transport=Transport.UDP),
                correlation_id="redirect-1",
            ))  # fmt: skip
            await eventually(lambda: manager.is_leg_established(call_id), "the answer", 10)
            manager.send_bye(call_id)
            end = await asyncio.wait_for(manager.leg_finished(call_id), 10)
            assert isinstance(end, LegEnded)
            ended.append(end)
        finally:
            await manager.close(timeout=1)

    try:
        asyncio.run(main())
        first, second = redirector.wait(15), answerer.wait(15)
    finally:
        redirector.stop()
        answerer.stop()
    assert first.exit_code == 0 and first.successful_calls == 1, first.explain()
    assert second.exit_code == 0 and second.successful_calls == 1, second.explain()
    [redirected] = [e for e in events if isinstance(e, Redirected)]
    assert redirected.target == second_uri and redirected.status_code == 302
    assert ended[0].cdr.redirects == (second_uri,) and ended[0].cdr.error is None
    invite = second.messages.split(f"INVITE {second_uri} SIP/2.0", 1)[1]
    assert re.search(r"^CSeq: *2 INVITE", invite, re.M), invite[:2000]
