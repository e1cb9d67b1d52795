"""utils/launcher.py: the place of a process in a run, read from torchrun's or SLURM's environment."""
import os
import re

import pytest
import torch

import utils.runtime
from utils.errors import UserError
from utils.launcher import Launch, launch_environment, slurm_port
from utils.runtime import setup

TORCHRUN = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500"}
# What srun sets for task 5 of a step of 8 (2 nodes, 4 tasks each), job 1234567.
SRUN = {"SLURM_JOB_ID": "1234567", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[03-04]",
        "SLURM_STEP_NODELIST": "gpu[03-04]"}
SRUN_PORT = 24567  # 10000 + 1234567 mod 20000 = 10000 + 14567


@pytest.fixture
def environment(monkeypatch):
    """Sets the given variables after clearing every launcher variable this process inherited."""
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in TORCHRUN:
            monkeypatch.delenv(name)

    def set_variables(variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
    return set_variables


def test_no_launcher_is_one_process(environment):
    environment({})
    assert launch_environment() == Launch()


def test_torchrun_variables_win_over_slurm_ones(environment):
    """torchrun started inside an allocation, e.g. `srun --ntasks-per-node 1 torchrun ...`."""
    environment({**SRUN, **TORCHRUN})
    assert launch_environment() == Launch("torchrun", rank=2, world_size=4, local_rank=1, init_method="env://")


def test_an_srun_task_meets_the_others_on_the_first_host_at_the_job_port(environment):
    environment(SRUN)
    assert launch_environment() == Launch("slurm", rank=5, world_size=8, local_rank=1,
                                          init_method=f"tcp://gpu03:{SRUN_PORT}")


@pytest.mark.parametrize("node_list,first", [
    ("node[01-04,07]", "node01"),
    ("gpu-a100-[009-012],gpu-h100-[1-2]", "gpu-a100-009"),
    ("rack[2-3]-n[10-11]", "rack2-n10"),
    ("login7,node[1-2]", "login7"),
    ("node17", "node17"),
    ("127.0.0.1", "127.0.0.1"),
])
def test_the_first_host_of_a_compressed_node_list(environment, node_list, first):
    environment({**SRUN, "SLURM_JOB_NODELIST": node_list})
    assert launch_environment().init_method == f"tcp://{first}:{SRUN_PORT}"


def test_master_addr_and_port_set_by_the_user_win_under_slurm(environment):
    environment({**SRUN, "MASTER_ADDR": "fe80::1", "MASTER_PORT": "41000"})
    assert launch_environment().init_method == "tcp://[fe80::1]:41000"


def test_the_port_is_the_job_id_mod_20000_above_10000():
    assert [slurm_port(job_id) for job_id in (0, 1, 19999, 20000, 1234567)] == [10000, 10001, 29999, 10000, SRUN_PORT]
    ports = {slurm_port(job_id) for job_id in range(987654, 987654 + 20000)}
    assert len(ports) == 20000 and min(ports) == 10000 and max(ports) == 29999


def test_an_srun_step_of_one_task_is_one_process(environment):
    environment({**SRUN, "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"})
    assert launch_environment() == Launch("slurm")


def test_the_batch_script_of_a_job_of_several_tasks_runs_alone_with_a_warning(environment, capsys):
    """SLURM sets SLURM_NTASKS and SLURM_PROCID=0 in the batch script too, but srun's step variables
    only in the tasks it starts: without srun the other tasks would never come."""
    environment({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                 "SLURM_JOB_NODELIST": "gpu[03-04]"})
    assert launch_environment() == Launch()
    assert capsys.readouterr().err == ("warning: SLURM allocated 8 tasks but this process was not started by srun: "
                                       "it runs alone (start it with `srun python ...` to run one process per "
                                       "task)\n")


@pytest.mark.parametrize("variables,message", [
    ({**SRUN, "SLURM_JOB_NODELIST": "gpu[03-,05]"}, "cannot read SLURM_JOB_NODELIST='gpu[03-,05]'"),
    ({**SRUN, "SLURM_PROCID": "five"}, "environment variable SLURM_PROCID='five' is not an integer"),
    ({"WORLD_SIZE": "2"}, "the launcher set no RANK"),
])
def test_an_unreadable_launcher_environment_is_one_line(environment, variables, message):
    environment(variables)
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        launch_environment()


@pytest.mark.parametrize("visible,device", [(4, 1), (1, 0)])
def test_setup_under_srun_takes_the_local_rank_gpu_or_the_one_slurm_bound(environment, monkeypatch, visible,
                                                                            device):
    """Tasks that see every GPU of the node take the one of their local rank; a task that SLURM bound
    to one GPU (--gpus-per-task 1) takes that one. The process group meets at the first host."""
    environment(SRUN)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    started = []
    monkeypatch.setattr(utils.runtime.dist, "init_process_group", lambda **kwargs: started.append(kwargs))
    runtime = setup(None)
    assert (runtime.device, runtime.rank, runtime.world_size) == (torch.device("cuda", device), 5, 8)
    assert started == [{"backend": "nccl", "init_method": f"tcp://gpu03:{SRUN_PORT}", "rank": 5, "world_size": 8}]
