"""`tspin_trl/collator.py`: `DataCollatorForTriplet` pads prompt+real, prompt+synthetic and prompt+proto into one
batch."""

import torch

from tspin_trl import DataCollatorForTriplet


def test_collator_pads_triplets_and_truncates_responses():
    collator = DataCollatorForTriplet(pad_token_id=0, max_length=4)
    examples = [
        {"prompt_ids": [1, 2], "real_ids": [3, 4, 5], "synthetic_ids": [6], "proto_ids": [7, 8]},
        {"prompt_ids": [9], "real_ids": [10], "synthetic_ids": [11, 12], "proto_ids": [13]},
    ]
    batch = collator(examples)
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4],
        [9, 10, 0, 0],
        [1, 2, 6, 0],
        [9, 11, 12, 0],
        [1, 2, 7, 8],
        [9, 13, 0, 0],
    ]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 1, 1],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 1],
        [0, 1, 0, 0],
    ]
    assert batch["attention_mask"].sum(1).tolist() == [4, 2, 3, 3, 4, 2]
    assert batch["response_lengths"].tolist() == [[2, 1, 2], [1, 2, 1]]
    assert batch["synthetic_equals_real"].tolist() == [False, False]
    # Without proto rows (beta = 0) the batch has two roles only
    pairs = collator([{k: v for k, v in e.items() if k != "proto_ids"} | {"ref_real_logps": -1.0} for e in examples])
    assert pairs["input_ids"].shape == (4, 4)
    assert torch.equal(pairs["ref_real_logps"], torch.tensor([-1.0, -1.0]))
