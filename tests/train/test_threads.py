import torch

from thinkjepa.train.threads import torch_threads


def test_the_thread_count_holds_inside_and_is_restored_after_an_error() -> None:
    before = torch.get_num_threads()
    try:
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
