// Issue 11 case 1: standalone Asio (libasio-dev) registers every socket
// with its epoll reactor right after socket(), before bind/connect.
// An async_accept and an async_connect on one io_context, a 5-byte echo,
// and a 5 s deadline. Usage: asio_echo HOST PORT
#include <asio.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

int main(int argc, char **argv)
{
	if (argc != 3) {
		std::fprintf(stderr, "usage: asio_echo HOST PORT\n");
		return 2;
	}
	asio::io_context io;
	asio::ip::tcp::endpoint ep(asio::ip::make_address(argv[1]), (unsigned short)std::atoi(argv[2]));
	asio::ip::tcp::acceptor acc(io);
	acc.open(ep.protocol());
	acc.set_option(asio::ip::tcp::acceptor::reuse_address(true));
	acc.bind(ep);
	acc.listen();
	asio::ip::tcp::socket srv(io), cli(io);
	char sbuf[5], cbuf[5];
	bool ok = false, timed_out = false;
	asio::steady_timer deadline(io, std::chrono::seconds(5));
	deadline.async_wait([&](asio::error_code e) {
		if (!e) {
			timed_out = true;
			io.stop();
		}
	});
	acc.async_accept(srv, [&](asio::error_code e) {
		if (e) {
			std::printf("async_accept: %s\n", e.message().c_str());
			io.stop();
			return;
		}
		std::printf("accepted\n");
		asio::async_read(srv, asio::buffer(sbuf), [&](asio::error_code e, std::size_t) {
			if (e) {
				std::printf("server read: %s\n", e.message().c_str());
				io.stop();
				return;
			}
			asio::async_write(srv, asio::buffer(sbuf), [](asio::error_code, std::size_t) {});
		});
	});
	cli.open(ep.protocol()); // registered with the reactor here, before connect
	cli.async_connect(ep, [&](asio::error_code e) {
		if (e) {
			std::printf("async_connect: %s\n", e.message().c_str());
			io.stop();
			return;
		}
		std::printf("connected\n");
		asio::async_write(cli, asio::buffer("hello", 5), [&](asio::error_code e, std::size_t) {
			if (e) {
				std::printf("client write: %s\n", e.message().c_str());
				io.stop();
				return;
			}
			asio::async_read(cli, asio::buffer(cbuf), [&](asio::error_code e, std::size_t) {
				if (!e && !std::memcmp(cbuf, "hello", 5))
					ok = true;
				else
					std::printf("client read: %s\n", e.message().c_str());
				io.stop();
			});
		});
	});
	io.run();
	if (timed_out)
		std::printf("asio: timed out after 5 s\n");
	std::printf(ok ? "asio echo ok\n" : "asio echo FAILED\n");
	std::fflush(stdout);
	return ok ? 0 : 1;
}
