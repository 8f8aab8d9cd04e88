"""A minimal service made only of libs/common parts, run as a real process the tests can kill.

It decodes pupdates from one topic and forwards them to another, dead-lettering what does not
decode, exactly the way the real services are meant to use the helpers.
"""

from __future__ import annotations

import argparse
import logging
import time

from libs.common.deadletters import DeadLetters
from libs.common.kafka.consumer import Consumer
from libs.common.kafka.producer import Producer
from libs.common.lifecycle import Shutdown
from libs.common.logs import configure_logging
from libs.common.serde import SerdeError, serde
from libs.common.settings import CommonSettings

log = logging.getLogger("relay")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="pupdates.raw")
    ap.add_argument("--sink", default="pupdates")
    ap.add_argument("--group", default="relay")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--slow-ms", type=float, default=0.0, help="pause per message (widens kill windows)")
    args = ap.parse_args()

    configure_logging("relay")
    settings = CommonSettings()
    shutdown = Shutdown().install_signal_handlers()
    consumer = Consumer(
        settings, name="relay", group_id=settings.topic(args.group), topics=[settings.topic(args.source)]
    )
    producer = Producer(settings, name="relay")
    dead = DeadLetters(settings, "relay")
    sink = settings.topic(args.sink)
    reader = serde("pupdate_raw")
    try:
        while not shutdown.is_set():
            batch = consumer.poll_batch(args.batch, 0.2)
            for msg in batch:
                try:
                    reader.decode(msg.value())
                except SerdeError as exc:
                    dead.send(producer, exc.reason, str(exc), message=msg)
                    continue
                producer.produce(sink, msg.value(), key=msg.key())
                if args.slow_ms:
                    time.sleep(args.slow_ms / 1000)
            producer.flush(30)
            consumer.store(batch)
    finally:
        consumer.close()
        producer.close()
        log.info("stopped", extra={"reason": shutdown.reason})


if __name__ == "__main__":
    main()
