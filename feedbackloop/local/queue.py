"""An SQS event source mapping on the stand-in: receive, invoke the function with an SQS-shaped event,
delete what it did not report as failed (ReportBatchItemFailures); failures become visible again."""

from __future__ import annotations

import threading

import boto3

from feedbackloop.local.environment import REGION


def sqs_event(messages: list[dict], queue_arn: str) -> dict:
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"}, "messageAttributes": {},
        "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": REGION,
    } for m in messages]}


class QueueMapping(threading.Thread):
    """Polls an idle queue less and less often, down to once a second; `wake()` polls it at once."""

    def __init__(self, session: boto3.Session, queue_url: str, invoke, batch_size: int = 10,
                 visibility_timeout: int = 30, poll_interval: float = 0.1, max_idle_interval: float = 1.0) -> None:
        super().__init__(name=f"sqs-{queue_url.rsplit('/', 1)[-1]}", daemon=True)
        self._sqs = session.client("sqs")
        self._url = queue_url
        self._arn = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self._invoke = invoke
        self._batch = batch_size
        self._visibility = visibility_timeout
        self._poll, self._max_idle = poll_interval, max(poll_interval, max_idle_interval)
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self.invocations = 0
        self.errors: list[str] = []  # polls that failed (a lost queue, a dropped connection)

    def wake(self) -> None:
        self._woken.set()

    def run(self) -> None:
        idle = self._poll
        while not self._stopping.is_set():
            try:
                messages = self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=self._batch,
                                                     WaitTimeSeconds=0, VisibilityTimeout=self._visibility
                                                     ).get("Messages", [])
            except Exception as error:  # the endpoint went away at shutdown, or a transient error: poll on
                if self._stopping.is_set():
                    return
                self.errors.append(repr(error))
                self._stopping.wait(0.5)
                continue
            if not messages:
                self._woken.wait(idle)
                self._woken.clear()
                idle = min(idle * 2, self._max_idle)
                continue
            idle = self._poll
            try:
                response = self._invoke(sqs_event(messages, self._arn)) or {}
                failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            except Exception:  # noqa: BLE001 - a function error leaves the whole batch for a retry
                failed = {m["MessageId"] for m in messages}
            self.invocations += 1
            done = [m for m in messages if m["MessageId"] not in failed]
            if done:
                self._sqs.delete_message_batch(QueueUrl=self._url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()
