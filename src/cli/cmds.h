/*
 * cmds.h — entry points of the CLI commands (one per src/cli/cmd_<name>.c).
 * Each returns the process exit code: 0 ok, 1 runtime error, 2 usage error.
 */
#ifndef PU_CLI_CMDS_H
#define PU_CLI_CMDS_H

int pu_cmd_data(int argc, char **argv);
int pu_cmd_data_pack(int argc, char **argv);
int pu_cmd_eval(int argc, char **argv);
int pu_cmd_forward(int argc, char **argv);
int pu_cmd_generate(int argc, char **argv);
int pu_cmd_info(int argc, char **argv);
int pu_cmd_quantize(int argc, char **argv);
int pu_cmd_tokenizer(int argc, char **argv);
int pu_cmd_tokenizer_train(int argc, char **argv);
int pu_cmd_serve(int argc, char **argv);
int pu_cmd_chat(int argc, char **argv);
int pu_cmd_train(int argc, char **argv);
int pu_cmd_plot(int argc, char **argv);
int pu_cmd_lora(int argc, char **argv);
int pu_cmd_sft(int argc, char **argv);
int pu_cmd_rm(int argc, char **argv);
int pu_cmd_dpo(int argc, char **argv);
int pu_cmd_ppo(int argc, char **argv);
int pu_cmd_sandbox(int argc, char **argv);
int pu_cmd_agent(int argc, char **argv);
int pu_cmd_demo(int argc, char **argv);

#endif
