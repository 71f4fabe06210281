"""pydantic-ai's Temporal integration on the same dev server, in the same scenario.

A `TemporalAgent` whose model takes ``MODEL_SECONDS`` to answer (its model call is one activity,
with the integration's default activity settings) runs in a workflow; the caller cancels the
workflow (``WorkflowHandle.cancel()``, the integration's way to stop a run) mid-answer and times
until ``result()`` raises. Also recorded: what the caller holds (the error only: no partial
answer), and how long the model call went on after the cancel (the activity does not heartbeat,
so with the default ``TRY_CANCEL`` it never learns of the cancel and runs to its end). Its worker
runs in this process (the latency is the server's round trips, not CPU).
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from contextlib import suppress
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import AgentPlugin, PydanticAIPlugin, TemporalAgent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from ._common import Row, latency_metrics

MODEL_SECONDS = 3.0
MODEL_ENDED: list[float] = []  # when each model call ended (perf_counter)


async def slow_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await asyncio.sleep(MODEL_SECONDS)
    MODEL_ENDED.append(time.perf_counter())
    return ModelResponse(parts=[TextPart("a long answer")])


with warnings.catch_warnings():  # its newer capability API is not needed for this scenario
    warnings.simplefilter("ignore")
    peer_agent = TemporalAgent(
        Agent(FunctionModel(slow_model), name="bench_peer"), name="bench_peer"
    )


@workflow.defn
class PeerWorkflow:
    @workflow.run
    async def run(self, prompt: str) -> str:
        result = await peer_agent.run(prompt)
        return result.output


async def pydantic_ai_row(client: Client, *, trials: int) -> Row:
    config = client.config()
    config["plugins"] = [*config.get("plugins", []), PydanticAIPlugin()]
    peer_client = Client(**config)
    queue = f"bench-peer-{uuid.uuid4().hex[:6]}"
    samples: list[float] = []
    overruns: list[float] = []
    kept: list[str] = []
    async with Worker(
        peer_client, task_queue=queue, workflows=[PeerWorkflow], plugins=[AgentPlugin(peer_agent)]
    ):
        for _ in range(trials):
            MODEL_ENDED.clear()
            handle = await peer_client.start_workflow(
                PeerWorkflow.run, "go", id=f"peer-{uuid.uuid4().hex[:8]}", task_queue=queue
            )
            await asyncio.sleep(1.0)  # mid-answer
            started = time.perf_counter()
            await handle.cancel()
            try:
                await handle.result()
                kept.append("finished")
            except WorkflowFailureError as error:
                kept.append(type(error.cause).__name__)
            samples.append(time.perf_counter() - started)
            with suppress(TimeoutError):
                async with asyncio.timeout(MODEL_SECONDS + 2):
                    while not MODEL_ENDED:
                        await asyncio.sleep(0.05)
            if MODEL_ENDED:
                overruns.append(MODEL_ENDED[0] - started)
    metrics: dict[str, Any] = {
        **latency_metrics(samples),
        "outcome": sorted(set(kept)),
        "partial_chars": 0,
        "model_call_ran_on_after_cancel_s": round(max(overruns), 2) if overruns else None,
    }
    return Row(
        "temporal (cancel from another process → caller holds the result)",
        "pydantic-ai TemporalAgent, workflow cancel (default activity config)",
        metrics,
        f"{metrics['median_ms']:.0f} / {metrics['p99_ms']:.0f} ms, {'/'.join(metrics['outcome'])}"
        f", nothing kept; the model call ran on {metrics['model_call_ran_on_after_cancel_s']} s",
    )
