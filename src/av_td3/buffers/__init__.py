"""Replay buffers: ``DictReplayBuffer`` (dict observations, each camera frame stored once) and
``ReplayBuffer`` (flat states, frozen-CNN mode). Both return :class:`ReplayBatch` tensors."""

from av_td3.buffers.base import ReplayBatch
from av_td3.buffers.dict_replay_buffer import DictReplayBuffer
from av_td3.buffers.memory import BufferTooLargeError
from av_td3.buffers.replay_buffer import ReplayBuffer

__all__ = ["DictReplayBuffer", "ReplayBuffer", "ReplayBatch", "BufferTooLargeError"]
